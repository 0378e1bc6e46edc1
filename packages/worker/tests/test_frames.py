"""Frame formats and the conversions between decoded video and what processors see."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import av
import numpy as np
import pytest

from byockit.protocol.errors import MediaError
from byockit.protocol.media.convert import TO_YUV420, Reformatter
from byockit.testkit.synthetic import indexed_frame, read_index
from byockit.worker.frames import Frame, FrameConverter, FrameFormat, decoded_rgb, load_torch
from byockit.worker.processor import StreamContext

W, H = 128, 72

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def decoded(index: int, width: int = W, height: int = H) -> av.VideoFrame:
    """A frame as the decoder hands it on: yuv420p, 90 kHz timestamps."""
    rgb = av.VideoFrame.from_ndarray(indexed_frame(index, width, height), format="rgb24")
    frame = rgb.reformat(format="yuv420p")
    frame.pts = index * 3000
    return frame


def context() -> StreamContext:
    return StreamContext("s", {}, send_data=lambda _: None, send_event=lambda _: None)


def close_to(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return bool(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() < 4)


def test_formats_check_their_options() -> None:
    assert FrameFormat.numpy() == FrameFormat("numpy", "uint8", "HWC", "cpu")
    assert FrameFormat.torch() == FrameFormat("torch", "float32", "CHW", "auto")
    with pytest.raises(ValueError, match="dtype"):
        FrameFormat.torch(dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layout"):
        FrameFormat.torch(layout="NCHW")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device"):
        FrameFormat.torch(device="tpu")
    with pytest.raises(ValueError, match="numpy frames are uint8 HWC"):
        FrameFormat("numpy", "float32", "HWC", "cpu")


def test_frames_carry_their_time() -> None:
    frame = Frame(np.zeros((2, 2, 3), np.uint8), 45_000, 3, context())
    assert frame.time == 0.5
    other = frame.with_data("pixels")
    assert (other.data, other.pts, other.index, other.stream) == ("pixels", 45_000, 3, frame.stream)


def test_numpy_frames_are_the_decoded_rgb_pixels() -> None:
    converter = FrameConverter(FrameFormat.numpy())
    rgb = converter.to_processor(decoded(5), None)
    assert rgb.shape == (H, W, 3)
    assert rgb.dtype == np.uint8
    assert read_index(rgb) == 5
    assert close_to(rgb, indexed_frame(5, W, H))


def test_a_requested_size_is_covered_and_centre_cropped() -> None:
    frame = decoded(9)
    to_rgb = Reformatter("rgb24")
    same_aspect = decoded_rgb(frame, (64, 36), to_rgb)
    assert same_aspect.shape == (36, 64, 3)
    assert read_index(same_aspect) == 9
    square = decoded_rgb(frame, (96, 96), to_rgb)
    assert square.shape == (96, 96, 3)
    # the middle columns of the 171x96 scaled frame
    full = np.asarray(frame.to_ndarray(format="rgb24", width=171, height=96))
    assert np.array_equal(square, full[:, 37:133])


def test_numpy_results_become_frames_at_the_input_timestamp() -> None:
    converter = FrameConverter(FrameFormat.numpy())
    rgb = indexed_frame(3, W, H)
    out = converter.to_video(rgb, 9000)
    assert (out.pts, out.width, out.height) == (9000, W, H)
    assert np.array_equal(out.to_ndarray(format="rgb24"), rgb)
    floats = converter.to_video((rgb / 255.0)[None], 0)  # float, with a batch dimension
    assert np.array_equal(floats.to_ndarray(format="rgb24"), rgb)
    as_frame = converter.to_video(Frame(rgb[:36, :64], 0, 0, context()), 0)
    assert (as_frame.width, as_frame.height) == (64, 36)


def test_results_become_yuv420_frames_that_own_their_pixels() -> None:
    """As the encoder thread takes them: ``to_video`` wraps the result, a Reformatter copies it."""
    converter = FrameConverter(FrameFormat.numpy())
    to_yuv420 = Reformatter("yuv420p", TO_YUV420)
    buffer = indexed_frame(3, W, H)
    out = to_yuv420(converter.to_video(buffer, 9000))
    assert (out.format.name, out.pts, out.width, out.height) == ("yuv420p", 9000, W, H)
    buffer[:] = indexed_frame(4, W, H)  # a processor reusing its output array at once
    rgb = out.to_ndarray(format="rgb24")
    assert read_index(rgb) == 3
    assert close_to(rgb, indexed_frame(3, W, H))
    cropped = to_yuv420(converter.to_video(buffer[2:38, 4:68], 0))  # strided: read in place
    assert (cropped.width, cropped.height) == (64, 36)
    assert close_to(cropped.to_ndarray(format="rgb24"), indexed_frame(4, W, H)[2:38, 4:68])


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (np.zeros((72, 128, 4), np.uint8), r"shape \(72, 128, 4\); expected \(H, W, 3\)"),
        (np.zeros((72, 128, 3), np.int32), "int32 array; expected uint8"),
        (np.zeros((71, 128, 3), np.uint8), "128x71 frame; H.264 needs an even"),
        (np.zeros((0, 0, 3), np.uint8), "0x0 frame"),
        ("pixels", "returned str; expected a Frame"),
    ],
)
def test_unusable_results_are_named(result: object, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        FrameConverter(FrameFormat.numpy()).to_video(result, 0)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_torch_frames_on_the_cpu(
    dtype: Literal["uint8", "float32"], layout: Literal["HWC", "CHW"]
) -> None:
    fmt = FrameFormat.torch(dtype=dtype, layout=layout, device="cpu")
    converter = FrameConverter(fmt)
    tensor = converter.to_processor(decoded(7), None)
    assert tensor.device.type == "cpu"
    assert tuple(tensor.shape) == ((H, W, 3) if layout == "HWC" else (3, H, W))
    full_scale = 255 if dtype == "uint8" else 1.0
    assert tensor.dtype == (torch.uint8 if dtype == "uint8" else torch.float32)
    assert float(tensor.min()) >= 0
    assert float(tensor.max()) <= full_scale
    inverted = converter.to_video(full_scale - tensor, 21_000)
    rgb = inverted.to_ndarray(format="rgb24")
    assert inverted.pts == 21_000
    assert read_index(rgb) == 7
    assert close_to(rgb, 255 - indexed_frame(7, W, H))


def test_conversions_to_torch_on_the_cpu_make_no_copy() -> None:
    frame = decoded(1)
    hwc = FrameConverter(FrameFormat.torch(dtype="uint8", layout="HWC", device="cpu"))
    cropped = hwc.to_processor(frame, (96, 96))
    assert tuple(cropped.shape) == (96, 96, 3)
    assert cropped.stride(0) >= 171 * 3  # a view into the scaled 171x96 frame's rows
    chw = FrameConverter(FrameFormat.torch(dtype="uint8", layout="CHW", device="cpu"))
    assert tuple(chw.to_processor(frame, None).stride()) == (1, W * 3, 3)  # a permuted view
    floats = FrameConverter(FrameFormat.torch(device="cpu")).to_processor(frame, None)
    assert floats.is_contiguous()  # the one pass that must write new memory lays it out CHW


def test_unusable_tensors_are_named() -> None:
    converter = FrameConverter(FrameFormat.torch(layout="CHW", device="cpu"))
    with pytest.raises(MediaError, match=r"shape \(72, 128, 3\), expected \(3, H, W\)"):
        converter.to_video(torch.zeros(72, 128, 3), 0)
    with pytest.raises(MediaError, match="int32 tensor"):
        converter.to_video(torch.zeros(3, 72, 128, dtype=torch.int32), 0)
    batched = converter.to_video(torch.ones(1, 3, 72, 128, requires_grad=True), 0)
    assert int(batched.to_ndarray(format="rgb24").min()) == 255


def test_numpy_processors_may_return_hwc_tensors() -> None:
    converter = FrameConverter(FrameFormat.numpy())
    out = converter.to_video(torch.from_numpy(indexed_frame(2, W, H)), 0)
    assert read_index(out.to_ndarray(format="rgb24")) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_asking_for_cuda_without_it_is_a_clear_error() -> None:
    with pytest.raises(MediaError, match="CUDA is not available"):
        load_torch(FrameFormat.torch(device="cuda"))
    assert (
        FrameConverter(FrameFormat.torch(device="auto")).to_processor(decoded(0), None).device.type
        == "cpu"
    )


def test_without_torch_a_torch_format_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MediaError, match=r"install byockit-worker\[torch\]"):
        load_torch(FrameFormat.torch())
    load_torch(FrameFormat.numpy())


def test_a_numpy_worker_never_imports_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import byockit.worker.session, byockit.worker.frames as f\n"
        "f.FrameConverter(f.FrameFormat.numpy())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@needs_cuda
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_torch_frames_round_trip_through_cuda(dtype: Literal["uint8", "float32"]) -> None:
    converter = FrameConverter(FrameFormat.torch(dtype=dtype, device="cuda"))
    full_scale = 255 if dtype == "uint8" else 1.0
    for index in range(3):  # the pinned buffers are reused
        tensor = converter.to_processor(decoded(index), None)
        assert tensor.device.type == "cuda"
        assert tuple(tensor.shape) == (3, H, W)
        rgb = converter.to_video(full_scale - tensor, 0).to_ndarray(format="rgb24")
        assert read_index(rgb) == index
        assert close_to(rgb, 255 - indexed_frame(index, W, H))
