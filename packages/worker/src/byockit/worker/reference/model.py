"""Serve your own exported torch model as a BYOC worker.

:class:`ModelProcessor` loads a TorchScript file (``torch.jit.save``) or a
``torch.export`` program (``torch.export.save``), told apart by the file's
contents, not its name. You declare the image the model takes and returns
(:class:`~byockit.worker.reference.model_settings.ModelSettings`): layout
``NCHW`` or ``NHWC``, dtype ``float32`` or ``uint8``, value range, and the
resolution it works at. Each frame is converted to that on the device and
the output converted back, without copies where none is needed.

``load()`` (at server start) puts the model on the device, optionally in
half precision (CUDA only: on the CPU the request is ignored with a warning,
so one configuration serves on both) and compiled with ``torch.compile``
(``torch.export`` programs only; where compiling fails - no C compiler, no
Triton, an unsupported platform - the model runs uncompiled, with a warning).
It then runs the model once on a dummy frame at the declared resolution
(512x512 when none is declared) so that the first real frame is not slow,
and checks the output: it must be one image tensor ``(1, 3, H, W)``
(``NCHW``) or ``(1, H, W, 3)`` (``NHWC``), floating point (or uint8 for the
range 0..255). A model that fails on the declared input or returns anything
else raises :class:`ModelError` from ``load()``: the server logs it, reports
it in ``/health`` and refuses streams with it. A model returning a tuple or
list serves its first element (extra outputs, such as masks, are ignored);
a dict is refused. The output may have another size than the input, unless a
resolution is declared: then it is resized back to the frame's size.

:class:`Model` is the same, configured by environment variables, to serve
with ``byockit-worker serve byockit.worker.reference:Model``:

=============================  ==========================================================
``BYOCKIT_MODEL_PATH``         the model file (required), e.g. ``/models/model.pt``
``BYOCKIT_MODEL_LAYOUT``       ``NCHW`` (default) or ``NHWC``
``BYOCKIT_MODEL_DTYPE``        ``float32`` (default) or ``uint8``
``BYOCKIT_MODEL_RANGE``        pixel values ``low,high``: ``0,1`` (float32 default),
                               ``-1,1``, ``0,255`` (uint8: always)
``BYOCKIT_MODEL_RESOLUTION``   ``WIDTHxHEIGHT`` the model works at, e.g. ``512x512``
                               (default: the frame's size; a ``torch.export`` program
                               exported for one fixed size gets that size)
``BYOCKIT_MODEL_HALF``         ``1`` to run in float16 on CUDA (default ``0``)
``BYOCKIT_MODEL_COMPILE``      ``1`` to ``torch.compile`` the model (default ``0``)
``BYOCKIT_MODEL_DEVICE``       ``auto`` (default: CUDA when available), ``cpu``,
                               ``cuda`` or ``cuda:N``
=============================  ==========================================================

Export a model (in eval mode: an exported program keeps the mode it was
exported in), then serve it. ``torch.export`` is the format to prefer (recent
torch deprecates TorchScript, and only a program can be compiled)::

    import torch

    class Negative(torch.nn.Module):
        def forward(self, image):  # (1, 3, H, W) float32 in [0, 1]
            return 1 - image

    model = Negative().eval()
    # for any frame size (without dynamic_shapes: for 512x512 frames only)
    size = {2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    program = torch.export.export(
        model, (torch.rand(1, 3, 512, 512),), dynamic_shapes={"image": size}
    )
    torch.export.save(program, "negative.pt2")
    # or TorchScript:
    torch.jit.save(torch.jit.script(model), "negative.pt")

.. code-block:: sh

    BYOCKIT_MODEL_PATH=negative.pt2 byockit-worker serve byockit.worker.reference:Model
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch.export.passes import move_to_device_pass

from byockit.protocol.errors import ByockitError
from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import Processor
from byockit.worker.reference.model_settings import (
    ENVIRONMENT,
    FLOAT_RANGE,
    UINT8_RANGE,
    DType,
    Layout,
    ModelSettings,
)

logger = logging.getLogger(__name__)

ModelKind: TypeAlias = Literal["torchscript", "export"]
ModelFunction: TypeAlias = Callable[[torch.Tensor], object]

DEFAULT_WARMUP_RESOLUTION: Final = (512, 512)
"""(width, height) of the warm-up frame when no resolution is declared."""
RANGE_SLACK: Final = 0.05
"""How far (a fraction of the range) warm-up output may stray before a warning."""
_KIND_NAMES: Final[dict[ModelKind, str]] = {
    "torchscript": "TorchScript model",
    "export": "torch.export program",
}
_HOW_TO_EXPORT: Final = (
    "save the model with torch.jit.save(torch.jit.script(model), path) "
    "or torch.export.save(torch.export.export(model, (example,)), path)"
)
_INPUT_SETTINGS: Final = ("layout", "dtype", "value_range", "resolution")
_TORCHSCRIPT_FAILURE: Final = "The following operation failed in the TorchScript interpreter."


class ModelError(ByockitError):
    """A model that cannot be served: no such file, not an exported model, or not
    taking or returning the declared image."""


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """A served model takes no stream parameters (any key is refused)."""


def model_kind(path: Path) -> ModelKind:
    """Which exporter wrote ``path``, read from the archive's entries; :class:`ModelError` if none.

    Both formats are zip archives: TorchScript holds ``code/`` and
    ``constants.pkl``, a ``torch.export`` program an ``archive_format`` entry
    (``serialized_exported_program.json`` before torch 2.6). A ``torch.save``
    checkpoint (``data.pkl`` alone) holds weights or a pickled module, and
    no code that runs without its Python class.
    """
    if not path.exists():
        raise ModelError(f"no model file at {path.absolute()}")
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ModelError(
            f"{path} is not a TorchScript or torch.export file (not a zip archive): "
            + _HOW_TO_EXPORT
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    entries = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in entries or "serialized_exported_program.json" in entries:
        return "export"
    if "constants.pkl" in entries and any(entry.startswith("code/") for entry in entries):
        return "torchscript"
    if "data.pkl" in entries:
        raise ModelError(
            f"{path} is a torch.save checkpoint (weights or a pickled module), "
            "not an exported model: " + _HOW_TO_EXPORT
        )
    raise ModelError(
        f"{path} is a zip archive but not a TorchScript or torch.export file: " + _HOW_TO_EXPORT
    )


class ModelProcessor(Processor[ModelParams]):
    """Serves an exported model (see the module's documentation); call :meth:`load` first.

    The arguments are :class:`ModelSettings`' and checked at once
    (``ValueError``); the file is read by :meth:`load`.
    """

    params_type = ModelParams

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        layout: Layout = "NCHW",
        dtype: DType = "float32",
        value_range: tuple[float, float] | None = None,
        resolution: tuple[int, int] | None = None,
        half: bool = False,
        compile: bool = False,
        device: str = "auto",
    ) -> None:
        ranged = {} if value_range is None else {"value_range": value_range}
        self.settings: Final = ModelSettings(
            path=Path(path),
            layout=layout,
            dtype=dtype,
            resolution=resolution,
            half=half,
            compile=compile,
            device=device,
            **ranged,
        )
        self.frame_format = FrameFormat.torch(
            dtype=dtype, layout="CHW" if layout == "NCHW" else "HWC", device=device
        )
        self._channel_dim: Final = 1 if layout == "NCHW" else 3
        self._resolution = resolution
        self._half = False
        self._model: ModelFunction | None = None

    @property
    def resolution(self) -> tuple[int, int] | None:
        """(width, height) the model works at: declared, or read from the program at load."""
        return self._resolution

    def load(self) -> None:
        """Load the model onto the device, compile it if asked, warm it up and check its output."""
        settings = self.settings
        device = _device(settings.device)
        kind = model_kind(settings.path)
        module: Any
        with settings.path.open("rb") as file:
            try:
                if kind == "torchscript":
                    module = torch.jit.load(file, map_location=device).eval()  # type: ignore[no-untyped-call]
                else:
                    program = torch.export.load(file)
            except Exception as exc:
                raise ModelError(
                    f"cannot load {settings.path} as a {_KIND_NAMES[kind]}: {_summary(exc)}"
                ) from exc
        if kind == "export":
            self._fit_program_input(program)
            if device.type != "cpu":
                program = move_to_device_pass(program, device)
            module = program.module()
        if settings.half:
            if device.type == "cuda":
                module = module.half()
                self._half = True
            else:
                logger.warning("half precision needs CUDA: the model runs in float32 on %s", device)
        started = time.perf_counter()
        frame = self._dummy_frame(device)
        self._warm_up(module, frame)
        model: ModelFunction = module
        if settings.compile:
            model = self._compiled(module, kind, frame)
        self._model = model
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        logger.info(
            "loaded %s %s on %s (input %s %s%s%s), warm-up %.0f ms",
            _KIND_NAMES[kind],
            settings.path,
            device,
            self._input_shape(frame),
            "float16" if self._half else settings.dtype,
            f" in {settings.value_range}" if settings.dtype == "float32" else "",
            ", compiled" if model is not module else "",
            (time.perf_counter() - started) * 1000,
        )

    def process(self, frame: Frame[Any]) -> torch.Tensor:
        """The model's output for one frame, as a float image in [0, 1] (or uint8)."""
        if self._model is None:
            raise RuntimeError("the model is not loaded: call load() first")
        data: torch.Tensor = frame.data
        size = (data.shape[1], data.shape[2]) if self._channel_dim == 1 else data.shape[:2]
        with torch.inference_mode():
            image = _image(self._model(self._model_input(data)), self.settings, self._channel_dim)
            return self._frame_output(image, (size[0], size[1]))

    # -- loading

    def _fit_program_input(self, program: torch.export.ExportedProgram) -> None:
        """Check the program's input against the declared one; take its size if none is declared.

        A program exported without dynamic shapes takes one size only.
        """
        inputs = program.graph_signature.user_inputs
        if len(inputs) != 1:
            raise ModelError(
                f"the program takes {len(inputs)} inputs ({', '.join(map(str, inputs))}); "
                "a video model takes one image tensor"
            )
        placeholder = next(
            node for node in program.graph.nodes if node.op == "placeholder" and node.name in inputs
        )
        shape = getattr(placeholder.meta.get("val"), "shape", None)
        if shape is None:
            raise ModelError(f"the program's input {inputs[0]!r} is not a tensor")
        fixed = tuple(dim if isinstance(dim, int) else None for dim in shape)
        if (
            len(fixed) != 4
            or fixed[0] not in (1, None)
            or fixed[self._channel_dim] not in (3, None)
        ):
            raise ModelError(
                f"the program was exported for an input of shape {_shape(fixed)}, "
                f"but layout {self.settings.layout} gives it {_image_shape(self.settings.layout)}"
            )
        height, width = (fixed[2], fixed[3]) if self.settings.layout == "NCHW" else fixed[1:3]
        if height is None or width is None:
            return
        if self._resolution is None:
            self._resolution = (width, height)
            logger.info("the program takes %dx%d frames: frames are resized to it", width, height)
        elif self._resolution != (width, height):
            raise ModelError(
                f"the program was exported for an input of shape {_shape(fixed)}, "
                f"but resolution {self._resolution[0]}x{self._resolution[1]} is declared "
                f"({ENVIRONMENT['resolution']}={width}x{height} fits it)"
            )

    def _dummy_frame(self, device: torch.device) -> torch.Tensor:
        """Random pixels as the worker hands a frame over (same dtype, layout and strides)."""
        width, height = self._resolution or DEFAULT_WARMUP_RESOLUTION
        generator = torch.Generator().manual_seed(0)
        if self.settings.dtype == "uint8":
            hwc = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
        else:
            hwc = torch.rand((height, width, 3), generator=generator)
        hwc = hwc.to(device)
        if self.settings.layout == "NHWC":
            return hwc
        chw = hwc.permute(2, 0, 1)
        return chw if self.settings.dtype == "uint8" else chw.contiguous()

    def _warm_up(self, module: ModelFunction, frame: torch.Tensor) -> None:
        """Run ``module`` once on ``frame``; :class:`ModelError` unless it returns an image."""
        with torch.inference_mode():
            try:
                output = module(self._model_input(frame))
            except Exception as exc:
                raise ModelError(
                    f"the model fails on its declared input {self._input_shape(frame)} "
                    f"({self._declaration()}): {_summary(exc)}. Declare the input it takes "
                    f"({', '.join(ENVIRONMENT[name] for name in _INPUT_SETTINGS)})"
                ) from exc
            image = _image(output, self.settings, self._channel_dim)
            self._check_values(image)

    def _compiled(
        self, module: ModelFunction, kind: ModelKind, frame: torch.Tensor
    ) -> ModelFunction:
        """``torch.compile(module)`` compiled by a first run, or ``module`` where that fails."""
        if kind == "torchscript":
            logger.warning(
                "torch.compile does not apply to TorchScript (export the model with torch.export "
                "to compile it): the model runs on the TorchScript interpreter"
            )
            return module
        try:
            compiled: ModelFunction = torch.compile(module)
            with torch.inference_mode():
                compiled(self._model_input(frame))
        except Exception as exc:
            logger.warning("torch.compile failed (%s): the model runs uncompiled", _summary(exc))
            return module
        return compiled

    def _check_values(self, image: torch.Tensor) -> None:
        """Warn when the warm-up output strays far outside the declared range (it is clipped)."""
        low, high = self.settings.value_range
        if image.dtype == torch.uint8:
            return
        least, most = (value.item() for value in torch.aminmax(image.float()))
        slack = (high - low) * RANGE_SLACK
        if not (low - slack <= least and most <= high + slack):
            logger.warning(
                "on the warm-up frame the model returned values in [%.3g, %.3g], outside the "
                "declared range (%g, %g), which is clipped: is the value range (%s) right?",
                least,
                most,
                low,
                high,
                ENVIRONMENT["value_range"],
            )

    # -- per frame

    def _model_input(self, frame: torch.Tensor) -> torch.Tensor:
        """A frame (CHW or HWC, uint8 or float in [0, 1]) as the model's declared input."""
        batch = frame.unsqueeze(0)
        if self._resolution is not None:
            width, height = self._resolution
            if self._batch_size(batch) != (height, width):
                batch = self._resized(batch, (height, width))
        if self.settings.dtype == "float32":
            low, high = self.settings.value_range
            if (low, high) != FLOAT_RANGE:
                batch = batch.mul(high - low).add_(low)
            if self._half:
                batch = batch.half()
        return batch

    def _frame_output(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A checked model output as a frame: float in [0, 1] (uint8 as is), at ``size`` (h, w)
        when a resolution is declared."""
        resize = self._resolution is not None and self._batch_size(image) != size
        if image.dtype == torch.uint8 and not resize:
            return image[0]
        low, high = self.settings.value_range
        if (low, high) != FLOAT_RANGE:
            image = image.sub(low).mul_(1 / (high - low))  # uint8 becomes float32
        if resize:
            image = self._resized(image.float(), size)
        return image[0]

    def _resized(self, batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``batch`` (in the model's layout) resized to ``size`` (h, w), bilinear, antialiased."""
        nchw = batch if self.settings.layout == "NCHW" else batch.permute(0, 3, 1, 2)
        resized = F.interpolate(
            nchw if nchw.is_floating_point() else nchw.float(),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        if batch.dtype == torch.uint8:
            resized = resized.round_().clamp_(0, 255).to(torch.uint8)
        return resized if self.settings.layout == "NCHW" else resized.permute(0, 2, 3, 1)

    def _batch_size(self, batch: torch.Tensor) -> tuple[int, int]:
        """(h, w) of a batch in the model's layout."""
        shape = batch.shape
        return (shape[2], shape[3]) if self._channel_dim == 1 else (shape[1], shape[2])

    # -- messages

    def _input_shape(self, frame: torch.Tensor) -> str:
        return _shape(tuple(self._model_input(frame).shape))

    def _declaration(self) -> str:
        settings = self.settings
        declared = f"layout {settings.layout}, dtype {settings.dtype}"
        if settings.dtype == "float32":
            declared += f", values in {settings.value_range}"
        if self._resolution is None:
            return declared + ", no resolution: any frame size"
        return declared + f", resolution {self._resolution[0]}x{self._resolution[1]}"


class Model(ModelProcessor):
    """A :class:`ModelProcessor` configured by the ``BYOCKIT_MODEL_*`` environment variables.

    Constructed without arguments, as ``byockit-worker serve
    byockit.worker.reference:Model`` does; a missing or malformed variable
    raises :class:`~byockit.protocol.errors.ParseError` naming it.
    """

    def __init__(self) -> None:
        settings = ModelSettings.from_env(os.environ)
        super().__init__(
            settings.path,
            layout=settings.layout,
            dtype=settings.dtype,
            value_range=settings.value_range,
            resolution=settings.resolution,
            half=settings.half,
            compile=settings.compile,
            device=settings.device,
        )


def _device(name: str) -> torch.device:
    """The device named as the worker resolves it (``auto``: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {name!r}: CUDA is not available")
    return torch.device(name)


def _image(output: object, settings: ModelSettings, channel_dim: int) -> torch.Tensor:
    """The image tensor a model returned (the first of a tuple or list), checked."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    expected = _image_shape(settings.layout)
    if not isinstance(output, torch.Tensor):
        raise ModelError(
            f"the model returned a {type(output).__name__}; expected an image tensor {expected}"
        )
    shape = tuple(output.shape)
    if len(shape) != 4 or shape[0] != 1 or shape[channel_dim] != 3 or 0 in shape:
        raise ModelError(
            f"the model returned a tensor of shape {_shape(shape)}; expected {expected} "
            f"(layout {settings.layout})"
        )
    if output.dtype == torch.uint8:
        if settings.value_range != UINT8_RANGE:
            raise ModelError(
                f"the model returned uint8 values, but the declared range is "
                f"{settings.value_range}: declare the range (0, 255)"
            )
    elif not output.is_floating_point():
        raise ModelError(
            f"the model returned a {output.dtype} tensor; expected floating point "
            "(or uint8 for the range 0..255)"
        )
    return output


def _image_shape(layout: Layout) -> str:
    return "(1, 3, H, W)" if layout == "NCHW" else "(1, H, W, 3)"


def _shape(shape: tuple[int | None, ...]) -> str:
    dims = ["?" if dim is None else str(dim) for dim in shape]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def _summary(exc: BaseException) -> str:
    """One line saying why: for a TorchScript failure its last line (the first is boilerplate)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].strip() == _TORCHSCRIPT_FAILURE else lines[0]
    named = re.match(r"\w+(Error|Exception): ", line)
    return line if named else f"{type(exc).__name__}: {line}"
