"""``pixelate``: the picture as uniform blocks of ``block_size`` pixels, each its mean colour.

The frame is cut into up to four regions: whole blocks, a strip of
narrower blocks on the right, a strip of shorter blocks at the bottom and
their corner, when the size is not a multiple of the block. Each region is
viewed (no copy) as ``(3, rows, block height, columns, block width)``, its
means taken over the two block axes into a small buffer and broadcast back
into the output. So every frame size works, partial blocks at the edges are
the mean of the pixels they cover, and nothing is resampled: the blocks are
exact, with no blur at their borders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byockit.worker.reference.assets import Assets
from byockit.worker.reference.checks import check_range
from byockit.worker.reference.effect import Effect, Stage


@dataclass(frozen=True)
class PixelateParams:
    """``block_size``: the side of a block in pixels (2 to 256)."""

    block_size: int = 16

    def validate(self, where: str, assets: Assets) -> None:
        check_range(where, "block_size", self.block_size, 2, 256)


class PixelateStage(Stage[PixelateParams]):
    def apply(self, image: torch.Tensor, params: PixelateParams) -> torch.Tensor:
        out = self.buffers.like("out", image)
        height, width = image.shape[1:]
        block = params.block_size
        whole_rows, whole_columns = height - height % block, width - width % block
        rows = ((0, whole_rows, block), (whole_rows, height, height % block))
        columns = ((0, whole_columns, block), (whole_columns, width, width % block))
        for row, (top, bottom, block_height) in enumerate(rows):
            for column, (left, right, block_width) in enumerate(columns):
                if bottom > top and right > left:
                    region = (slice(None), slice(top, bottom), slice(left, right))
                    self._blocks(image[region], out[region], block_height, block_width, row, column)
        return out

    def _blocks(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        block_height: int,
        block_width: int,
        row: int,
        column: int,
    ) -> None:
        """Fill ``target`` with the block means of ``source`` (same region of the frame)."""
        blocks = (source.shape[1] // block_height, block_height)
        across = (source.shape[2] // block_width, block_width)
        means = self.buffers.get(
            f"means.{row}.{column}", (3, blocks[0], 1, across[0], 1), source.device
        )
        torch.mean(source.view(3, *blocks, *across), (2, 4), True, out=means)
        cells = target.view(3, *blocks, *across)
        cells.copy_(means.expand_as(cells))


class Pixelate(Effect[PixelateParams]):
    """Uniform blocks (``"pixelate"``); see :class:`PixelateParams`."""

    name = "pixelate"
    params_type = PixelateParams
    stage_type = PixelateStage
