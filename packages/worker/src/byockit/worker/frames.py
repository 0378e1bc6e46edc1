"""Frames as a processor receives them, and the conversions to and from decoded video.

A processor says what it wants with a :class:`FrameFormat`: numpy uint8 RGB
``(H, W, 3)`` (the default), or a torch tensor (uint8, or float32 in
``[0, 1]``; ``HWC`` or ``CHW``) on a chosen device. Conversions cost as
little as possible:

- decoded YUV becomes RGB (and, when the stream asks for a size, is scaled to
  cover it) in one swscale pass, straight into the array handed over, with
  the stream's own swscale context (:class:`~byockit.protocol.media.convert.Reformatter`);
- what ``process`` returns is read where it lies (no copy): the encoder
  converts it to yuv420p in one more pass, before the processor runs again;
- numpy to torch on the CPU shares memory (``torch.from_numpy``); ``CHW`` is
  a view; float conversion is one pass on the target device;
- to CUDA, frames go through a reused pinned host buffer with a non-blocking
  copy, and come back the same way.

What a processor returns (a :class:`Frame`, an array or a tensor, with an
optional leading batch dimension of 1) becomes a video frame at the input
frame's timestamp. torch is imported only when a torch format is used.

Audio reaches a processor that asks for it (``process_audio``) as an
:class:`AudioFrame` of float32 samples; :mod:`byockit.worker.audio` decodes
and re-encodes it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import attrs
import av
import numpy as np
import numpy.typing as npt

from byockit.protocol.errors import MediaError
from byockit.protocol.media.convert import Reformatter, rgb_view
from byockit.protocol.media.ts import CLOCK_HZ, TIME_BASE

if TYPE_CHECKING:
    import torch

    from byockit.worker.processor import StreamContext

DataT = TypeVar("DataT")
RGBArray = npt.NDArray[np.uint8]

KINDS: Final = ("numpy", "torch")
DTYPES: Final = ("uint8", "float32")
LAYOUTS: Final = ("HWC", "CHW")


def _check_device(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("cpu", "cuda", "auto") and not value.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {value!r}")


@attrs.frozen
class FrameFormat:
    """What :meth:`Processor.process` receives; build it with :meth:`numpy` or :meth:`torch`."""

    kind: Literal["numpy", "torch"] = attrs.field(validator=attrs.validators.in_(KINDS))
    dtype: Literal["uint8", "float32"] = attrs.field(validator=attrs.validators.in_(DTYPES))
    layout: Literal["HWC", "CHW"] = attrs.field(validator=attrs.validators.in_(LAYOUTS))
    device: str = attrs.field(validator=_check_device)

    def __attrs_post_init__(self) -> None:
        if self.kind == "numpy" and (self.dtype, self.layout, self.device) != (
            "uint8",
            "HWC",
            "cpu",
        ):
            raise ValueError("numpy frames are uint8 HWC on the CPU: use FrameFormat.numpy()")

    @classmethod
    def numpy(cls) -> FrameFormat:
        """A numpy uint8 RGB array of shape ``(H, W, 3)``."""
        return cls("numpy", "uint8", "HWC", "cpu")

    @classmethod
    def torch(
        cls,
        *,
        dtype: Literal["uint8", "float32"] = "float32",
        layout: Literal["HWC", "CHW"] = "CHW",
        device: str = "auto",
    ) -> FrameFormat:
        """A torch tensor: uint8, or float32 in ``[0, 1]``; ``"auto"``: CUDA when available."""
        return cls("torch", dtype, layout, device)


@attrs.frozen
class Frame(Generic[DataT]):
    """One video frame as the processor sees it.

    ``pts`` is the presentation time in 90 kHz ticks (the output frame gets
    the same), ``index`` counts the stream's decoded frames from 0 (frames
    dropped before inference leave gaps), ``stream`` is the stream it belongs
    to (emit data and events through it).
    """

    data: DataT
    pts: int
    index: int
    stream: StreamContext = attrs.field(repr=False)

    @property
    def time(self) -> float:
        """The presentation time in seconds."""
        return self.pts / CLOCK_HZ

    def with_data(self, data: Any) -> Frame[Any]:
        """The same frame carrying other pixels."""
        return attrs.evolve(self, data=data)


AudioSamples = npt.NDArray[np.float32]


@attrs.frozen
class AudioFrame:
    """A run of decoded audio as :meth:`Processor.process_audio` hears it.

    ``samples`` is float32 ``(channels, n)`` in ``[-1, 1]``, planar;
    ``pts`` is the time of its first sample in 90 kHz ticks (the stream's
    clock, as video frames have it). AAC gives 1024 samples a frame, Opus 960.
    """

    samples: AudioSamples
    sample_rate: int
    pts: int
    stream: StreamContext = attrs.field(repr=False)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def time(self) -> float:
        """The presentation time of the first sample, in seconds."""
        return self.pts / CLOCK_HZ

    def with_samples(self, samples: npt.NDArray[Any]) -> AudioFrame:
        """The same frame carrying other samples."""
        return attrs.evolve(self, samples=samples)


def load_torch(fmt: FrameFormat) -> None:
    """Import torch and check the device a torch format names; raises a clear error if unusable.

    Called once when a processor loads, so that a missing dependency shows
    before the first stream.
    """
    if fmt.kind == "torch":
        _resolve_device(_import_torch(), fmt.device)


class FrameConverter:
    """Converts frames for one stream's inference thread (it keeps reusable buffers: not shared)."""

    def __init__(self, fmt: FrameFormat) -> None:
        self.format: Final = fmt
        self._torch: Any = None
        self._device: Any = None
        if fmt.kind == "torch":
            self._torch = _import_torch()
            self._device = _resolve_device(self._torch, fmt.device)
        self._pinned_in: _PinnedBuffer | None = None
        self._pinned_out: _PinnedBuffer | None = None
        self._to_rgb = Reformatter("rgb24")

    def to_processor(self, frame: av.VideoFrame, size: tuple[int, int] | None) -> Any:
        """The frame's pixels in the processor's format; ``size`` (w, h): scale to cover, crop."""
        rgb = decoded_rgb(frame, size, self._to_rgb)
        if self._torch is None:
            return rgb
        return self._to_tensor(rgb)

    def to_video(self, result: object, pts: int) -> av.VideoFrame:
        """What ``process`` returned, as an RGB frame at ``pts``; :class:`MediaError` if unusable.

        Numpy arrays are HWC; tensors are in the processor's layout. The frame
        shares the result's memory (or this converter's download buffer):
        encode or convert it before the processor runs again.
        """
        data = result.data if isinstance(result, Frame) else result
        if isinstance(data, np.ndarray):
            rgb = _rgb_from_array(data)
        elif _is_tensor(data):
            rgb = self._rgb_from_tensor(data)
        else:
            raise MediaError(
                f"process() returned {type(data).__name__}; expected a Frame, a numpy array, "
                "a torch tensor or None"
            )
        height, width = rgb.shape[:2]
        if width % 2 or height % 2 or not width or not height:
            raise MediaError(
                f"process() returned a {width}x{height} frame; H.264 needs an even, non-zero size"
            )
        frame = rgb_view(rgb)
        frame.pts = pts
        frame.time_base = TIME_BASE
        return frame

    def _to_tensor(self, rgb: RGBArray) -> Any:
        torch = self._torch
        tensor = torch.from_numpy(rgb)
        if self._device.type == "cuda":
            if self._pinned_in is None or self._pinned_in.shape != tuple(tensor.shape):
                self._pinned_in = _PinnedBuffer(torch, tuple(tensor.shape))
            tensor = self._pinned_in.upload(tensor, self._device)
        if self.format.layout == "CHW":
            tensor = tensor.permute(2, 0, 1)
        if self.format.dtype == "float32":
            tensor = tensor.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
        return tensor

    def _rgb_from_tensor(self, tensor: Any) -> RGBArray:
        torch = self._torch or _import_torch()
        tensor = tensor.detach()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        chw = self.format.kind == "torch" and self.format.layout == "CHW"
        if tensor.ndim != 3 or tensor.shape[0 if chw else 2] != 3:
            expected = "(3, H, W)" if chw else "(H, W, 3)"
            raise MediaError(
                f"process() returned a tensor of shape {tuple(tensor.shape)}, expected {expected}"
            )
        if chw:
            tensor = tensor.permute(1, 2, 0)
        if tensor.dtype != torch.uint8:
            if not tensor.is_floating_point():
                raise MediaError(
                    f"process() returned a {tensor.dtype} tensor; expected uint8 "
                    "or floating point in [0, 1]"
                )
            tensor = tensor.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        if tensor.device.type == "cuda":
            tensor = tensor.contiguous()
            if self._pinned_out is None or self._pinned_out.shape != tuple(tensor.shape):
                self._pinned_out = _PinnedBuffer(torch, tuple(tensor.shape))
            return self._pinned_out.download(tensor)
        return np.asarray(tensor.numpy())


def decoded_rgb(
    frame: av.VideoFrame, size: tuple[int, int] | None, to_rgb: Reformatter
) -> RGBArray:
    """(H, W, 3) uint8 RGB of a decoded frame, scaled to cover ``size`` and centre-cropped.

    One swscale pass with ``to_rgb`` (an rgb24 :class:`Reformatter`); the crop is a view.
    """
    if size is None or size == (frame.width, frame.height):
        return np.asarray(to_rgb(frame).to_ndarray(), dtype=np.uint8)
    width, height = size
    scale = max(width / frame.width, height / frame.height)
    scaled_w = max(width, round(frame.width * scale))
    scaled_h = max(height, round(frame.height * scale))
    rgb = np.asarray(to_rgb(frame, scaled_w, scaled_h).to_ndarray(), dtype=np.uint8)
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    return rgb[top : top + height, left : left + width]


def _rgb_from_array(array: npt.NDArray[Any]) -> RGBArray:
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[2] != 3:
        raise MediaError(
            f"process() returned an array of shape {array.shape}; expected (H, W, 3) RGB"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise MediaError(
            f"process() returned a {array.dtype} array; expected uint8 or floating point in [0, 1]"
        )
    return np.clip(array * 255 + 0.5, 0, 255).astype(np.uint8)


class _PinnedBuffer:
    """A page-locked host buffer reused for one frame shape, for non-blocking CUDA copies.

    An event recorded after each upload guards the buffer: it is not
    overwritten until the GPU has read the previous frame from it.
    """

    def __init__(self, torch: Any, shape: tuple[int, ...]) -> None:
        self.shape: Final = shape
        self._torch = torch
        self._host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        self._copied = torch.cuda.Event()
        self._copied.record()

    def upload(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        self._copied.synchronize()
        self._host.copy_(tensor)
        on_device: torch.Tensor = self._host.to(device, non_blocking=True)
        self._copied.record()
        return on_device

    def download(self, tensor: torch.Tensor) -> RGBArray:
        self._host.copy_(tensor, non_blocking=True)
        self._torch.cuda.current_stream(tensor.device).synchronize()
        return np.asarray(self._host.numpy())


def _is_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MediaError("FrameFormat.torch needs PyTorch: install byockit-worker[torch]") from exc
    return torch


def _resolve_device(torch: Any, device: str) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MediaError(f"FrameFormat.torch(device={device!r}): CUDA is not available")
    return torch.device(device)
