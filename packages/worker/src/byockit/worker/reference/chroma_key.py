"""``chroma_key``: a green (or any colour) screen replaced by a colour or an image.

Pixels are compared with the key colour by chroma only (the Cb and Cr of
BT.601 YCbCr), not brightness, so the shadows and folds of a real screen,
darker versions of its colour, are keyed with it. The distance gives a soft
matte: fully background within ``tolerance``, fully foreground beyond
``tolerance + softness``, a linear blend between, which keeps hair and
motion-blurred edges from stair-stepping. The foreground is then
composited over the background: a colour, or an image file read once
(:class:`~byockit.worker.reference.assets.Assets`) and scaled to cover the
frame once per frame size and device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F

from byockit.worker.reference.assets import Assets
from byockit.worker.reference.checks import check_range, is_color, parse_color
from byockit.worker.reference.effect import Effect, Stage

CHROMA: Final = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
"""The BT.601 full-range Cb and Cr rows of the RGB to YCbCr matrix."""
MIN_SOFTNESS: Final = 1e-4
"""``softness`` 0 is a hard edge: a ramp this narrow."""


@dataclass(frozen=True)
class ChromaKeyParams:
    """``key_color``: the screen's colour, ``"#rrggbb"``.

    ``tolerance``: chroma distance (0 to 1) keyed out entirely;
    ``softness``: the width (0 to 1) of the blend beyond it.
    ``background``: a colour ``"#rrggbb"`` or the path of an image file.
    """

    key_color: str = "#00ff00"
    tolerance: float = 0.25
    softness: float = 0.1
    background: str = "#000000"

    def validate(self, where: str, assets: Assets) -> None:
        parse_color(where, "key_color", self.key_color)
        check_range(where, "tolerance", self.tolerance, 0.0, 1.0)
        check_range(where, "softness", self.softness, 0.0, 1.0)
        if is_color(self.background):
            parse_color(where, "background", self.background)
        else:
            assets.image(where, "background", self.background)


class _Setup:
    """A parameter set on a device: the chroma matrix and key, and the background."""

    def __init__(self, params: ChromaKeyParams, assets: Assets, device: torch.device) -> None:
        self.matrix = torch.tensor(CHROMA, device=device)
        key = torch.tensor(parse_color("", "key_color", params.key_color), device=device)
        self.key = -(self.matrix @ key).unsqueeze(1)
        self.device = device
        self.background: torch.Tensor
        self._picture: torch.Tensor | None = None
        if is_color(params.background):
            color = parse_color("", "background", params.background)
            self.background = torch.tensor(color, device=device).view(3, 1, 1)
        else:
            pixels = torch.from_numpy(assets.accepted_image(params.background))
            self._picture = pixels.to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255)
            self.background = self._picture[0]

    def background_for(self, height: int, width: int) -> torch.Tensor:
        """The background for a frame of this size: a colour, or the picture covering it."""
        picture = self._picture
        if picture is None or tuple(self.background.shape[1:]) == (height, width):
            return self.background
        scale = max(height / picture.shape[2], width / picture.shape[3])
        size = (
            max(height, round(picture.shape[2] * scale)),
            max(width, round(picture.shape[3] * scale)),
        )
        scaled = F.interpolate(picture, size=size, mode="bilinear", antialias=True)
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        self.background = scaled[0, :, top : top + height, left : left + width].contiguous()
        return self.background


class ChromaKeyStage(Stage[ChromaKeyParams]):
    def __init__(self, assets: Assets) -> None:
        super().__init__(assets)
        self._params: ChromaKeyParams | None = None
        self._setup: _Setup | None = None

    def apply(self, image: torch.Tensor, params: ChromaKeyParams) -> torch.Tensor:
        setup = self._prepare(params, image.device)
        height, width = image.shape[1:]
        chroma = self.buffers.get("chroma", (2, height, width), image.device)
        torch.addmm(setup.key, setup.matrix, image.flatten(1), out=chroma.view(2, -1))
        alpha = self.buffers.get("alpha", (height, width), image.device)
        torch.mul(chroma[0], chroma[0], out=alpha).addcmul_(chroma[1], chroma[1]).sqrt_()
        softness = max(params.softness, MIN_SOFTNESS)
        alpha.sub_(params.tolerance).mul_(1 / softness).clamp_(0, 1)
        background = setup.background_for(height, width)
        out = self.buffers.like("out", image)
        torch.sub(image, background, out=out).mul_(alpha)
        return out.add_(background)

    def _prepare(self, params: ChromaKeyParams, device: torch.device) -> _Setup:
        """The setup for ``params``, made again for each new parameter set (or device)."""
        if self._setup is None or self._params is not params or self._setup.device != device:
            self._setup = _Setup(params, self.assets, device)
            self._params = params
        return self._setup


class ChromaKey(Effect[ChromaKeyParams]):
    """A colour keyed out over a colour or an image (``"chroma_key"``); :class:`ChromaKeyParams`."""

    name = "chroma_key"
    params_type = ChromaKeyParams
    stage_type = ChromaKeyStage
