"""``cartoon``: flat areas of a few colours, with dark outlines.

Three steps, as cel-shaded drawings are made:

1. Edge-preserving smoothing flattens texture and noise but not contours:
   each pass averages every pixel with four neighbours ``step`` pixels away,
   weighted by how alike their colours are (a bilateral filter on a sparse
   cross), and ``step`` doubles at each pass (1, 2, 4...), so a few passes
   reach far for the cost of a few per-pixel ops (the "a trous" scheme of
   edge-avoiding wavelets). A full bilateral window would cost ``k**2``
   weights a pixel; this costs four a pass, and only two are computed,
   since a pair of neighbours shares its weight.
2. Each channel is quantised to ``levels`` values: the smoothed areas
   become flat bands of colour.
3. Outlines are drawn where the smoothed luma has a strong gradient, so
   they follow shapes, not the quantisation's band boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch

from byockit.worker.reference.assets import Assets
from byockit.worker.reference.checks import check_range
from byockit.worker.reference.effect import Effect, Stage
from byockit.worker.reference.filters import (
    gradient,
    inner,
    luminance,
    padded,
    ramp,
    replicate_border,
)

MAX_SMOOTHING: Final = 6
COLOR_SIGMA: Final = 0.1
"""Colour distance (RGB, 0 to 1) at which a neighbour's weight has fallen to 1/e."""


@dataclass(frozen=True)
class CartoonParams:
    """``levels``: values per colour channel (2 to 32). ``smoothing``: passes (0 to 6).

    ``edges``: outline strength (0: none, 1: black). ``threshold``: the
    brightness step (0.01 to 1) where an outline starts.
    """

    levels: int = 6
    smoothing: int = 2
    edges: float = 1.0
    threshold: float = 0.1

    def validate(self, where: str, assets: Assets) -> None:
        check_range(where, "levels", self.levels, 2, 32)
        check_range(where, "smoothing", self.smoothing, 0, MAX_SMOOTHING)
        check_range(where, "edges", self.edges, 0.0, 1.0)
        check_range(where, "threshold", self.threshold, 0.01, 1.0)


class CartoonStage(Stage[CartoonParams]):
    def apply(self, image: torch.Tensor, params: CartoonParams) -> torch.Tensor:
        buffers = self.buffers
        smoothed = image
        for number in range(params.smoothing):
            target = buffers.like("smoothed." + "ab"[number % 2], image)
            smoothed = self._smooth(smoothed, target, 2**number)
        outline = buffers.get("outline", tuple(image.shape[1:]), image.device)
        luma = padded(buffers, "luma", image)
        luminance(smoothed, inner(luma))
        ramp(gradient(replicate_border(luma), outline, buffers), params.threshold)
        outline.mul_(-params.edges).add_(1)
        steps = params.levels - 1
        out = buffers.like("out", image)
        torch.mul(smoothed, steps, out=out).round_().clamp_(0, steps)
        return out.mul_(1 / steps).mul_(outline)

    def _smooth(self, source: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        """One edge-preserving pass with neighbours ``step`` pixels away, into ``target``.

        The image is seen as flat rows of ``H * W`` pixels, so a neighbour is
        a fixed offset (``step``, or ``step * W`` below) and every op runs on
        contiguous memory; pairs that a horizontal offset wraps from a row's
        end to the next row's start get weight 0.
        """
        height, width = source.shape[1:]
        pixels = height * width
        flat_source, flat_target = source.flatten(1), target.view(3, -1)
        flat_target.copy_(flat_source)
        buffers = self.buffers
        total = buffers.get("total", (pixels,), source.device).fill_(1)
        weight = buffers.get("weight", (pixels,), source.device)
        difference = buffers.get("difference", (3, pixels), source.device)
        for offset, horizontal in ((step, True), (step * width, False)):
            if step >= (width if horizontal else height):
                continue
            count = pixels - offset
            before, after = flat_source[:, :count], flat_source[:, offset:]
            squared = difference[:, :count]
            torch.sub(after, before, out=squared).mul_(squared)
            pair = weight[:count]
            torch.add(squared[0], squared[1], out=pair).add_(squared[2])
            pair.mul_(-1 / COLOR_SIGMA**2).clamp_(min=-30).exp_()  # no denormals: slow
            if horizontal:
                weight.view(height, width)[:, width - step :].zero_()
            flat_target[:, :count].addcmul_(pair, after)
            flat_target[:, offset:].addcmul_(pair, before)
            total[:count].add_(pair)
            total[offset:].add_(pair)
        flat_target.div_(total)
        return target


class Cartoon(Effect[CartoonParams]):
    """Flat colours and outlines (``"cartoon"``); see :class:`CartoonParams`."""

    name = "cartoon"
    params_type = CartoonParams
    stage_type = CartoonStage
