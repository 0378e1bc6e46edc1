"""What every reference effect shares: a processor serving one stage, and frame conversion.

An effect is split in two:

- a :class:`Stage` does the pixel work on one stream: it takes a float32
  ``(3, H, W)`` image in ``[0, 1]`` (any device, contiguous or channels-last
  memory) and writes its result into a buffer it owns, so that once the
  stream's frame size is known it allocates nothing more. It never writes
  to its input, so stages can follow one another (:class:`~.chain.Chain`).
- an :class:`Effect` is the :class:`~byockit.worker.Processor` serving one
  stage: it checks parameters, keeps one stage per stream, and converts the
  frame's tensor (float32 or uint8, ``CHW`` or ``HWC``) to the stage's image
  and the result back to the frame's dtype and layout.

One processor instance serves every stream of a server, each in its own
inference thread (where the SDK calls ``process`` and the other hooks), so
per-stream state lives in thread-local storage and is dropped when the
stream stops. The stage reads the parameters in force from the frame's
stream, so an update applies from the next frame with no copying of state.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import torch

from byockit.protocol.errors import MediaError
from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import Processor
from byockit.worker.reference.assets import Assets
from byockit.worker.reference.buffers import Buffers


class EffectParams(Protocol):
    """An effect's parameters: a dataclass of defaulted fields that can check its values."""

    def validate(self, where: str, assets: Assets) -> None:
        """Raise :class:`~byockit.worker.ParamsRejected` naming ``where``'s faulty field."""


ParamsT = TypeVar("ParamsT", bound=EffectParams)
ParamsT_contra = TypeVar("ParamsT_contra", bound=EffectParams, contravariant=True)


class Stage(Generic[ParamsT_contra]):
    """One effect at work on one stream: its buffers and what it derived from its parameters."""

    def __init__(self, assets: Assets) -> None:
        self.assets = assets
        self.buffers = Buffers()

    def apply(self, image: torch.Tensor, params: ParamsT_contra) -> torch.Tensor:
        """The effect on ``image`` (float32 ``(3, H, W)`` in ``[0, 1]``, left untouched).

        Returns a tensor of the same shape that the stage owns: valid until
        its next call.
        """
        raise NotImplementedError


class FrameIO:
    """Converts a frame's tensor to a stage's image and a stage's result back, in buffers.

    float32 ``CHW`` frames (what effects ask for) are used as they are;
    uint8 ones become float32 in ``[0, 1]`` and their result uint8 again
    (other floating point ones: float32, and their result their dtype again);
    ``HWC`` frames are viewed as ``CHW`` (channels-last memory) and the
    result is returned ``HWC``.
    """

    def __init__(self) -> None:
        self._buffers = Buffers()
        self._dtype = torch.float32
        self._hwc = False

    def image(self, data: object, layout: Literal["HWC", "CHW"]) -> torch.Tensor:
        """The frame as float32 ``(3, H, W)`` in ``[0, 1]``; :class:`MediaError` if it is unfit."""
        if not isinstance(data, torch.Tensor):
            raise MediaError(f"expected a torch tensor frame, got {type(data).__name__}")
        self._hwc = layout == "HWC"
        chw = data.permute(2, 0, 1) if self._hwc and data.ndim == 3 else data
        if chw.ndim != 3 or chw.shape[0] != 3 or chw.shape[1] < 1 or chw.shape[2] < 1:
            shape = "(H, W, 3)" if self._hwc else "(3, H, W)"
            raise MediaError(f"expected a {shape} RGB frame, got shape {tuple(data.shape)}")
        if chw.dtype != torch.uint8 and not chw.is_floating_point():
            raise MediaError(f"expected a uint8 or floating point frame, got {chw.dtype}")
        self._dtype = chw.dtype
        if chw.dtype == torch.float32:
            return chw
        image = self._buffers.like("image", chw, torch.float32)
        if chw.dtype == torch.uint8:
            return torch.mul(chw, 1 / 255, out=image)
        return image.copy_(chw)

    def frame_data(self, result: torch.Tensor) -> torch.Tensor:
        """A stage's result in the dtype and layout of the last frame given to :meth:`image`."""
        if self._dtype == torch.uint8:
            scaled = self._buffers.like("scaled", result)
            torch.mul(result, 255, out=scaled).add_(0.5).clamp_(0, 255)
            result = self._buffers.like("result", scaled, torch.uint8).copy_(scaled)
        elif self._dtype != result.dtype:
            result = self._buffers.like("result", result, self._dtype).copy_(result)
        return result.permute(1, 2, 0) if self._hwc else result


class _StreamState(threading.local):
    """One stream's stage and conversions (each stream runs in its own inference thread)."""

    stage: Stage[Any] | None
    io: FrameIO

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stage = None
        self.io = FrameIO()


class Effect(Processor[ParamsT]):
    """A processor serving one effect: subclasses name it and give its params and stage."""

    name: ClassVar[str]
    """The effect's name in a chain's stages."""
    stage_type: ClassVar[type[Stage[Any]]]
    frame_format = FrameFormat.torch(dtype="float32", layout="CHW", device="auto")

    def __init__(self) -> None:
        self._assets = Assets()
        self._state = _StreamState()

    def validate_params(self, params: ParamsT) -> None:
        params.validate("", self._assets)

    @torch.inference_mode()
    def process(self, frame: Frame[Any]) -> object:
        params = frame.stream.params
        if self.params_type is None or not isinstance(params, self.params_type):
            raise TypeError(
                f"{type(self).__name__} needs {self.params_type!r} parameters, "
                f"got {type(params).__name__}"
            )
        state = self._state
        if state.stage is None:
            state.stage = self.stage_type(self._assets)
        image = state.io.image(frame.data, self.frame_format.layout)
        return state.io.frame_data(state.stage.apply(image, params))

    def on_stream_stop(self) -> None:
        """Free this stream's buffers (GPU memory) now rather than when its thread ends."""
        self._state.reset()
