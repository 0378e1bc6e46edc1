"""``Chain``: several effects in order, each stage with its own parameters.

Parameters are ``{"stages": [{"effect": "<name>", ...that effect's parameters}, ...]}``.
Each stage is parsed as the effect alone would parse it (with
:func:`~byockit.worker.build_params`), so errors name the stage:
``stages[1].levels``. An empty list passes frames through untouched.

Stages hand each other the buffer they wrote, never copying. Every stream
keeps its stages (and so their buffers) while its parameters change: a new
parameter set is parsed once, between two frames, and each of its stages
reuses the buffers of an earlier stage of the same effect, so changing a
slider or reordering stages allocates nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import torch

from byockit.worker.frames import Frame, FrameFormat
from byockit.worker.processor import ParamsRejected, Processor, build_params
from byockit.worker.reference.assets import Assets
from byockit.worker.reference.cartoon import Cartoon
from byockit.worker.reference.chroma_key import ChromaKey
from byockit.worker.reference.effect import Effect, FrameIO, Stage
from byockit.worker.reference.grade import ColorGrade
from byockit.worker.reference.pixelate import Pixelate
from byockit.worker.reference.sketch import Sketch

EFFECTS: Final[Mapping[str, type[Effect[Any]]]] = {
    effect.name: effect for effect in (Sketch, Cartoon, ColorGrade, Pixelate, ChromaKey)
}
"""The effects a chain can run, by name."""
MAX_STAGES: Final = 8


def _default_stages() -> list[dict[str, Any]]:
    return [{"effect": "cartoon"}]


@dataclass(frozen=True)
class ChainParams:
    """``stages``: up to eight ``{"effect": name, ...params}`` objects, run in order."""

    stages: list[dict[str, Any]] = field(default_factory=_default_stages)


ParsedStage = tuple[type[Effect[Any]], Any]
"""A stage's effect and its parsed parameters."""


def parse_stages(stages: Sequence[Mapping[str, Any]], assets: Assets) -> list[ParsedStage]:
    """Each stage's effect and parameters; :class:`ParamsRejected` naming ``stages[i].field``."""
    if len(stages) > MAX_STAGES:
        raise ParamsRejected(
            f"parameter 'stages' has {len(stages)} stages; a chain runs at most {MAX_STAGES}"
        )
    names = ", ".join(repr(name) for name in EFFECTS)
    parsed = []
    for index, stage in enumerate(stages):
        where = f"stages[{index}]"
        if "effect" not in stage:
            raise ParamsRejected(f"parameter '{where}.effect' is missing (effects: {names})")
        name = stage["effect"]
        effect = EFFECTS.get(name) if isinstance(name, str) else None
        if effect is None:
            raise ParamsRejected(f"parameter '{where}.effect' must be one of {names}, got {name!r}")
        assert effect.params_type is not None
        own = {key: value for key, value in stage.items() if key != "effect"}
        params = build_params(effect.params_type, own, where=where)
        params.validate(where, assets)
        parsed.append((effect, params))
    return parsed


class _StreamState(threading.local):
    """One stream's stages, the parameters they were made for, and its conversions."""

    made_for: ChainParams | None
    stages: list[tuple[Stage[Any], Any]]
    io: FrameIO

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.made_for = None
        self.stages = []
        self.io = FrameIO()


class Chain(Processor[ChainParams]):
    """Effects in order (``{"stages": [...]}``); the default is one ``cartoon`` stage."""

    params_type = ChainParams
    frame_format = FrameFormat.torch(dtype="float32", layout="CHW", device="auto")

    def __init__(self) -> None:
        self._assets = Assets()
        self._state = _StreamState()

    def validate_params(self, params: ChainParams) -> None:
        parse_stages(params.stages, self._assets)

    @torch.inference_mode()
    def process(self, frame: Frame[Any]) -> object:
        params = frame.stream.params
        if not isinstance(params, ChainParams):
            raise TypeError(f"Chain needs ChainParams, got {type(params).__name__}")
        state = self._state
        if state.made_for is not params:
            state.stages = self._restage(parse_stages(params.stages, self._assets))
            state.made_for = params
        if not state.stages:
            return frame.data
        image = state.io.image(frame.data, self.frame_format.layout)
        for stage, stage_params in state.stages:
            image = stage.apply(image, stage_params)
        return state.io.frame_data(image)

    def on_stream_stop(self) -> None:
        """Free this stream's buffers (GPU memory) now rather than when its thread ends."""
        self._state.reset()

    def _restage(self, parsed: list[ParsedStage]) -> list[tuple[Stage[Any], Any]]:
        """Stages for ``parsed``, reusing this stream's earlier stages of the same effect."""
        spare = [stage for stage, _ in self._state.stages]
        stages = []
        for effect, params in parsed:
            reused = next((s for s in spare if type(s) is effect.stage_type), None)
            if reused is None:
                reused = effect.stage_type(self._assets)
            else:
                spare.remove(reused)
            stages.append((reused, params))
        return stages
