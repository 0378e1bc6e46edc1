"""``sketch``: the picture redrawn as pencil lines on paper.

Lines are where the brightness changes: the Sobel gradient of the slightly
blurred luma (the blur keeps compression noise from drawing speckles), put
through a soft threshold so strong edges are solid strokes and faint ones
fade out instead of flickering on and off from frame to frame. Under the
lines, ``shading`` keeps a light wash of the picture's tones, as a pencil
shades dark areas. Everything is per-pixel or a 3x3 neighbourhood, so it
stays cheap at any size. ``invert`` draws white chalk on a dark board.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byockit.worker.reference.assets import Assets
from byockit.worker.reference.checks import check_range
from byockit.worker.reference.effect import Effect, Stage
from byockit.worker.reference.filters import (
    blur,
    gradient,
    inner,
    luminance,
    padded,
    ramp,
    replicate_border,
)


@dataclass(frozen=True)
class SketchParams:
    """``strength``: 0 shows the original, 1 only the sketch (0 to 1).

    ``threshold``: the brightness step (0.01 to 1) where a line starts; it
    is solid at twice that. ``shading``: how much of the picture's tone
    shows under the lines (0: white paper, 1: full tone). ``invert``:
    light lines on dark.
    """

    strength: float = 1.0
    threshold: float = 0.08
    shading: float = 0.3
    invert: bool = False

    def validate(self, where: str, assets: Assets) -> None:
        check_range(where, "strength", self.strength, 0.0, 1.0)
        check_range(where, "threshold", self.threshold, 0.01, 1.0)
        check_range(where, "shading", self.shading, 0.0, 1.0)


class SketchStage(Stage[SketchParams]):
    def apply(self, image: torch.Tensor, params: SketchParams) -> torch.Tensor:
        buffers = self.buffers
        luma = padded(buffers, "luma", image)
        luminance(image, inner(luma))
        smooth = padded(buffers, "smooth", image)
        blur(replicate_border(luma), inner(smooth), buffers)
        lines = buffers.get("lines", tuple(image.shape[1:]), image.device)
        ramp(gradient(replicate_border(smooth), lines, buffers), params.threshold)
        pencil = buffers.get("pencil", tuple(image.shape[1:]), image.device)
        torch.mul(inner(smooth), params.shading, out=pencil).add_(1 - params.shading)
        pencil.mul_(lines.neg_().add_(1))
        if params.invert:
            pencil.neg_().add_(1)
        out = buffers.like("out", image)
        return torch.lerp(image, pencil.expand_as(image), params.strength, out=out)


class Sketch(Effect[SketchParams]):
    """Pencil lines on paper (``"sketch"``); see :class:`SketchParams`."""

    name = "sketch"
    params_type = SketchParams
    stage_type = SketchStage
