"""ModelProcessor on tiny models exported here: loading, conversions, warm-up checks, errors.

Frames go through the worker's real conversions (FrameConverter) both ways,
so what is checked is the RGB a stream would carry.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
import torch

from byockit.worker.frames import Frame, FrameConverter
from byockit.worker.processor import StreamContext
from byockit.worker.reference.model import ModelError, ModelProcessor, model_kind

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

H, W = 90, 160
STREAM = StreamContext("s", None, send_data=lambda _: None, send_event=lambda _: None)


class Invert(torch.nn.Module):
    """The negative of an image whose values range over (low, high)."""

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__()
        self.total = low + high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.total - x


class InvertFirstChannel(torch.nn.Module):
    """Inverts the red channel only, found at dimension ``dim``: tells layouts apart."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red, rest = x.narrow(self.dim, 0, 1), x.narrow(self.dim, 1, 2)
        return torch.cat([1 - red, rest], dim=self.dim)


class BitwiseNot(torch.nn.Module):
    """255 - x for uint8 input; fails on any other dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bitwise_not(x)


class Halve(torch.nn.Module):
    """Every other pixel: an output half the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::2, ::2]


class WithMask(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1 - x, x.mean(dim=1)


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": x}


class OneChannel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class Scalar(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean()


class Integers(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255).long()


class ToBytes(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.round().to(torch.uint8)


class ThreeDimensional(torch.nn.Module):
    """Wants (3, H, W): fails on the batch the loader gives it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(2, 0, 1)


def scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def exported(module: torch.nn.Module, path: Path, *, size: tuple[int, int] | None) -> Path:
    """A torch.export program taking (1, 3, h, w) for ``size`` (h, w), or any size for None."""
    example = torch.rand(1, 3, *(size or (64, 64)))
    dynamic = None if size else {"x": {2: torch.export.Dim("h"), 3: torch.export.Dim("w")}}
    torch.export.save(torch.export.export(module, (example,), dynamic_shapes=dynamic), str(path))
    return path


def gradient(height: int = H, width: int = W) -> npt.NDArray[np.uint8]:
    """A smooth RGB image (resizing it barely changes it)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
        axis=-1,
    ).astype(np.uint8)


def noise(height: int = H, width: int = W) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def served(processor: ModelProcessor, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``rgb`` through the worker's conversions, the processor, and back to RGB."""
    converter = FrameConverter(processor.frame_format)
    data = converter.to_processor(av.VideoFrame.from_ndarray(rgb, format="rgb24"), None)
    result = processor.process(Frame(data, 0, 0, STREAM))
    return np.asarray(converter.to_video(result, 0).to_ndarray(format="rgb24"), dtype=np.uint8)


def loaded(path: Path, **options: object) -> ModelProcessor:
    processor = ModelProcessor(path, device="cpu", **options)  # type: ignore[arg-type]
    processor.load()
    return processor


def difference(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models exported once for the whole module."""
    directory = tmp_path_factory.mktemp("models")
    scripted(Invert(), directory / "invert.pt")
    exported(Invert(), directory / "invert.pt2", size=None)
    exported(Invert(), directory / "invert_32x48.pt2", size=(32, 48))
    return directory


# -- files


@pytest.mark.parametrize(
    ("name", "kind"),
    [("invert.pt", "torchscript"), ("invert.pt2", "export")],
)
def test_the_kind_of_model_is_read_from_the_file_not_its_name(
    models: Path, tmp_path: Path, name: str, kind: str
) -> None:
    misnamed = tmp_path / ("model.pt2" if kind == "torchscript" else "model.pt")
    misnamed.write_bytes((models / name).read_bytes())
    assert model_kind(misnamed) == kind
    assert difference(served(loaded(misnamed), noise()), 255 - noise()) <= 1


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model file at .*nowhere\.pt"):
        loaded(tmp_path / "nowhere.pt")
    with pytest.raises(ModelError, match="is not a file"):
        loaded(tmp_path)


def test_a_file_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match=r"not a TorchScript or torch.export file \(not a zip"):
        loaded(path)


def test_a_truncated_model_is_refused(models: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    whole = (models / "invert.pt").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelError, match="not a zip archive"):
        loaded(path)


def test_a_checkpoint_is_told_apart_from_an_exported_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Conv2d(3, 3, 1).state_dict(), path)
    with pytest.raises(ModelError, match=r"torch\.save checkpoint .* torch\.jit\.save"):
        loaded(path)


def test_another_zip_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelError, match="a zip archive but not a TorchScript"):
        loaded(path)


def test_a_damaged_torchscript_archive_fails_to_load_clearly(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/code/__torch__.py", "not python (")
        archive.writestr("model/constants.pkl", b"junk")
        archive.writestr("model/data.pkl", b"junk")
    with pytest.raises(ModelError, match=r"cannot load .*model\.pt as a TorchScript model: \w+"):
        loaded(path)


# -- conversions


@pytest.mark.parametrize("name", ["invert.pt", "invert.pt2"])
def test_each_frame_goes_through_the_model(models: Path, name: str) -> None:
    processor = loaded(models / name)
    for rgb in (noise(), gradient()):
        assert difference(served(processor, rgb), 255 - rgb) <= 1


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_declared_layout_is_what_the_model_gets(tmp_path: Path, layout: str) -> None:
    model = scripted(InvertFirstChannel(dim=1 if layout == "NCHW" else 3), tmp_path / "red.pt")
    processor = loaded(model, layout=layout)
    rgb = noise()
    out = served(processor, rgb)
    assert difference(out[..., 0], 255 - rgb[..., 0]) <= 1
    assert difference(out[..., 1:], rgb[..., 1:]) <= 1


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_values_are_mapped_to_the_declared_range_and_back(
    tmp_path: Path, value_range: tuple[float, float]
) -> None:
    model = scripted(Invert(*value_range), tmp_path / "invert.pt")
    rgb = noise()
    assert difference(served(loaded(model, value_range=value_range), rgb), 255 - rgb) <= 1


def test_a_uint8_model_gets_uint8_pixels(tmp_path: Path) -> None:
    model = scripted(BitwiseNot(), tmp_path / "not.pt")
    rgb = noise()
    for layout in ("NCHW", "NHWC"):
        assert np.array_equal(served(loaded(model, dtype="uint8", layout=layout), rgb), 255 - rgb)
    with pytest.raises(ModelError, match="bitwise_not"):
        loaded(model)  # float32 input: the model refuses it at warm-up


def test_frames_are_resized_to_the_declared_resolution_and_back(models: Path) -> None:
    processor = loaded(models / "invert.pt", resolution=(48, 32))
    rgb = gradient()
    out = served(processor, rgb)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(np.int16) - (255 - rgb.astype(np.int16))).mean() < 3


def test_a_program_exported_for_one_size_gets_frames_at_that_size(models: Path) -> None:
    processor = loaded(models / "invert_32x48.pt2", dtype="float32")
    assert processor.resolution == (48, 32)
    rgb = gradient()
    out = served(processor, rgb)  # the program refuses any other size than 32x48
    assert out.shape == rgb.shape
    assert np.abs(out.astype(np.int16) - (255 - rgb.astype(np.int16))).mean() < 3


def test_a_resolution_the_program_does_not_take_is_refused(models: Path) -> None:
    with pytest.raises(ModelError, match=r"exported for an input of shape \(1, 3, 32, 48\).*48x32"):
        loaded(models / "invert_32x48.pt2", resolution=(64, 64))
    with pytest.raises(ModelError, match=r"layout NHWC gives it \(1, H, W, 3\)"):
        loaded(models / "invert_32x48.pt2", layout="NHWC")


def test_without_a_resolution_the_output_keeps_the_models_size(tmp_path: Path) -> None:
    processor = loaded(scripted(Halve(), tmp_path / "halve.pt"))
    rgb = noise(96, 160)
    assert np.array_equal(served(processor, rgb), rgb[::2, ::2])


def test_the_first_output_of_a_tuple_is_the_image(tmp_path: Path) -> None:
    rgb = noise()
    processor = loaded(scripted(WithMask(), tmp_path / "mask.pt"))
    assert difference(served(processor, rgb), 255 - rgb) <= 1


# -- warm-up checks


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (OneChannel(), r"shape \(1, 1, 512, 512\); expected \(1, 3, H, W\) \(layout NCHW\)"),
        (Scalar(), r"shape \(\); expected \(1, 3, H, W\)"),
        (Named(), r"returned a dict; expected an image tensor \(1, 3, H, W\)"),
        (Integers(), r"returned a torch.int64 tensor; expected floating point"),
        (ThreeDimensional(), r"fails on its declared input \(1, 3, 512, 512\) .*permute"),
    ],
)
def test_a_model_that_does_not_fit_fails_to_load(
    tmp_path: Path, module: torch.nn.Module, message: str
) -> None:
    processor = ModelProcessor(scripted(module, tmp_path / "model.pt"), device="cpu")
    with pytest.raises(ModelError, match=message):
        processor.load()


def test_the_input_shape_in_errors_follows_the_declaration(tmp_path: Path) -> None:
    model = scripted(ThreeDimensional(), tmp_path / "model.pt")
    with pytest.raises(ModelError, match=r"\(1, 32, 48, 3\) \(layout NHWC, dtype uint8, "):
        loaded(model, layout="NHWC", dtype="uint8", resolution=(48, 32))


def test_uint8_output_needs_the_uint8_range(tmp_path: Path) -> None:
    model = scripted(ToBytes(), tmp_path / "bytes.pt")
    with pytest.raises(ModelError, match=r"returned uint8 values, but the declared range is \(0"):
        loaded(model)
    rgb = noise()
    assert np.array_equal(served(loaded(model, value_range=(0.0, 255.0)), rgb), rgb)


def test_output_far_outside_the_range_is_warned_about(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        loaded(models / "invert.pt", value_range=(0.0, 255.0))  # the model works in (0, 1)
    assert "outside the declared range (0, 255)" in caplog.text


def test_half_precision_on_the_cpu_is_ignored_with_a_warning(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        processor = loaded(models / "invert.pt", half=True)
    assert "half precision needs CUDA" in caplog.text
    assert difference(served(processor, noise()), 255 - noise()) <= 1


def test_compiling_torchscript_is_skipped_with_a_warning(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        processor = loaded(models / "invert.pt", compile=True)
    assert "torch.compile does not apply to TorchScript" in caplog.text
    assert difference(served(processor, noise()), 255 - noise()) <= 1


COMPILE_ON_THE_CPU = """
import logging, sys, torch
from byockit.worker.frames import Frame
from byockit.worker.reference.model import ModelProcessor
logging.basicConfig(level=logging.INFO)
processor = ModelProcessor(sys.argv[1], compile=True, device="cpu")
processor.load()
frame = torch.rand(3, 32, 48)
print("error", float((processor.process(Frame(frame, 0, 0, None)) - (1 - frame)).abs().max()))
"""


def compile_in_a_child(model: Path, cache: Path, **env: str) -> tuple[str, float]:
    """Load ``model`` with ``compile=True`` in a child process (inductor reads its settings
    at import): its log, and the largest error of its output on a random frame."""
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_ON_THE_CPU, str(model)],
        env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), **env},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr, float(result.stdout.split()[-1])


def test_where_torch_compile_fails_the_model_runs_uncompiled(models: Path, tmp_path: Path) -> None:
    """No C++ compiler for inductor; a cache of its own, so no compiled kernel is reused."""
    log, error = compile_in_a_child(
        models / "invert.pt2", tmp_path / "cache", CXX=str(tmp_path / "no-such-compiler")
    )
    assert "torch.compile failed" in log
    assert "runs uncompiled" in log
    assert error < 1e-6


@pytest.mark.skipif(shutil.which("c++") is None, reason="inductor needs a C++ compiler")
@pytest.mark.timeout(300)  # compiling takes tens of seconds on a small machine
def test_an_exported_program_is_compiled_where_a_compiler_exists(
    models: Path, tmp_path: Path
) -> None:
    log, error = compile_in_a_child(models / "invert.pt2", tmp_path / "cache")
    assert "torch.compile failed" not in log
    assert ", compiled), warm-up" in log
    assert error < 1e-6


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none_is_refused(models: Path) -> None:
    with pytest.raises(ModelError, match="CUDA is not available"):
        ModelProcessor(models / "invert.pt", device="cuda").load()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layout": "CHW"}, "layout must be one of NCHW, NHWC"),
        ({"dtype": "float16"}, "dtype must be one of float32, uint8"),
        ({"value_range": (1.0, 0.0)}, "low < high"),
        ({"dtype": "uint8", "value_range": (0.0, 1.0)}, r"uint8 input ranges over \(0, 255\)"),
        ({"resolution": (512, 0)}, "two positive integers"),
        ({"device": "gpu"}, "device must be"),
    ],
)
def test_bad_options_are_refused_at_once(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelProcessor("model.pt", **options)  # type: ignore[arg-type]


def test_process_before_load_says_so(models: Path) -> None:
    with pytest.raises(RuntimeError, match="load"):
        ModelProcessor(models / "invert.pt").process(Frame(torch.rand(3, 8, 8), 0, 0, STREAM))
