"""``grade``: colour grading with temperature, contrast, saturation, brightness and a 3D LUT.

The four controls are all linear in RGB, so they are composed, once per
parameter set, into one 3x3 matrix and an offset, and a frame costs a
single matrix multiply (``addmm`` into the output buffer) however many are
set. A LUT, when given, then maps each colour through a 3D lattice with
trilinear interpolation: the lattice is a 5D ``(1, 3, D, H, W)`` volume
on the frame's device and ``grid_sample`` reads it at every pixel's colour,
which is exactly trilinear LUT lookup and one fused kernel on a GPU.
``lut_amount`` blends the looked-up colour with the ungraded one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from byockit.worker.reference.assets import Assets
from byockit.worker.reference.checks import check_range
from byockit.worker.reference.effect import Effect, Stage
from byockit.worker.reference.filters import LUMA
from byockit.worker.reference.luts import Lut3D


@dataclass(frozen=True)
class GradeParams:
    """``temperature``: -1 (cool, blue) to 1 (warm, orange). ``contrast``: 0 to 3 around mid-grey.

    ``saturation``: 0 (grey) to 3. ``brightness``: -1 to 1, added.
    ``lut``: a built-in look (``"warm"``, ``"cool"``, ``"noir"``,
    ``"teal_orange"``) or the path of a ``.cube`` file, applied after the
    controls. ``lut_amount``: 0 to 1, how much of the LUT's result shows.
    """

    temperature: float = 0.0
    contrast: float = 1.0
    saturation: float = 1.0
    brightness: float = 0.0
    lut: str | None = None
    lut_amount: float = 1.0

    def validate(self, where: str, assets: Assets) -> None:
        check_range(where, "temperature", self.temperature, -1.0, 1.0)
        check_range(where, "contrast", self.contrast, 0.0, 3.0)
        check_range(where, "saturation", self.saturation, 0.0, 3.0)
        check_range(where, "brightness", self.brightness, -1.0, 1.0)
        check_range(where, "lut_amount", self.lut_amount, 0.0, 1.0)
        if self.lut is not None:
            assets.lut(where, "lut", self.lut)


def color_matrix(params: GradeParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3, 3) matrix and (3, 1) offset that apply the four linear controls, in float64.

    In order: temperature (red and blue gains), saturation (towards the
    luma), contrast (scaling around 0.5), brightness (an offset).
    """
    warmth = 0.25 * params.temperature
    gains = torch.diag(torch.tensor([1 + warmth, 1.0, 1 - warmth], dtype=torch.float64))
    luma = torch.tensor([LUMA], dtype=torch.float64)
    saturate = (
        params.saturation * torch.eye(3, dtype=torch.float64)
        + (1 - params.saturation) * torch.ones(3, 1, dtype=torch.float64) @ luma
    )
    matrix = params.contrast * saturate @ gains
    offset = torch.full(
        (3, 1), 0.5 * (1 - params.contrast) + params.brightness, dtype=torch.float64
    )
    return matrix, offset


class _Setup:
    """What a parameter set becomes on a device: the colour matrix, and the LUT as a volume."""

    def __init__(self, params: GradeParams, lut: Lut3D | None, device: torch.device) -> None:
        matrix, offset = color_matrix(params)
        self.matrix = matrix.to(device, torch.float32)
        self.offset = offset.to(device, torch.float32)
        self.lut: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if lut is not None:
            table = torch.from_numpy(lut.table).to(device)
            volume = table.permute(3, 0, 1, 2).unsqueeze(0).contiguous()
            low = torch.tensor(lut.domain_min, dtype=torch.float64)
            high = torch.tensor(lut.domain_max, dtype=torch.float64)
            # grid_sample wants -1 to 1 across the lattice: colour * scale + shift
            scale = (2 / (high - low)).to(device, torch.float32)
            shift = (-1 - 2 * low / (high - low)).to(device, torch.float32)
            self.lut = volume, scale, shift


class GradeStage(Stage[GradeParams]):
    def __init__(self, assets: Assets) -> None:
        super().__init__(assets)
        self._params: GradeParams | None = None
        self._setup: _Setup | None = None

    def apply(self, image: torch.Tensor, params: GradeParams) -> torch.Tensor:
        setup = self._prepare(params, image.device)
        out = self.buffers.like("out", image)
        torch.addmm(setup.offset, setup.matrix, image.flatten(1), out=out.view(3, -1))
        out.clamp_(0, 1)
        if setup.lut is None:
            return out
        volume, scale, shift = setup.lut
        grid = self.buffers.get("grid", (1, 1, *image.shape[1:], 3), image.device)
        torch.addcmul(shift, out.permute(1, 2, 0), scale, out=grid[0, 0])
        looked_up = F.grid_sample(
            volume, grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        return out.lerp_(looked_up[0, :, 0], params.lut_amount)

    def _prepare(self, params: GradeParams, device: torch.device) -> _Setup:
        """The setup for ``params``, made again for each new parameter set (or device)."""
        if self._setup is None or self._params is not params or self._setup.matrix.device != device:
            lut = None if params.lut is None else self.assets.accepted_lut(params.lut)
            self._setup = _Setup(params, lut, device)
            self._params = params
        return self._setup


class ColorGrade(Effect[GradeParams]):
    """Colour controls and 3D LUTs (``"grade"``); see :class:`GradeParams`."""

    name = "grade"
    params_type = GradeParams
    stage_type = GradeStage
