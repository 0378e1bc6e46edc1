"""3D colour lookup tables: a strict Adobe ``.cube`` reader and a few built-in looks.

A 3D LUT maps every input colour to an output colour through a lattice of
``size**3`` samples; colours between samples are interpolated trilinearly
(:mod:`~byockit.worker.reference.grade` does it on the GPU). LUTs are what
colourists hand over, so ``grade`` takes any ``.cube`` file; the built-in
looks are computed here from short formulas instead of shipping data files.

The reader is strict because a LUT that loads wrongly does not fail, it just
looks wrong on air: every deviation from the format is an error naming its
line. Sizes above :data:`MAX_SIZE` are refused to keep loading quick.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

MAX_SIZE: Final = 65
"""The largest ``LUT_3D_SIZE`` read (65**3 rows); 17, 33 and 65 are the usual sizes."""
MAX_FILE_BYTES: Final = 16 * 1024 * 1024
BUILTIN_SIZE: Final = 33

Table = npt.NDArray[np.float32]
Channels = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]


class CubeError(ValueError):
    """A ``.cube`` file that does not follow the format; the message names the line."""


@dataclass(frozen=True, eq=False)
class Lut3D:
    """A 3D LUT: ``table[b, g, r]`` is the (r, g, b) output for input lattice point (r, g, b).

    Inputs are first mapped from ``[domain_min, domain_max]`` (per channel)
    onto the lattice; blue varies slowest, red fastest, as ``.cube`` rows do.
    """

    table: Table
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def size(self) -> int:
        return int(self.table.shape[0])


def read_cube(path: str) -> Lut3D:
    """The LUT in a ``.cube`` file: :class:`OSError` if unreadable, :class:`CubeError` if bad."""
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise CubeError(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    return parse_cube(data.decode("utf-8-sig", errors="replace"))


def parse_cube(text: str) -> Lut3D:
    """Parse the text of an Adobe ``.cube`` 3D LUT; :class:`CubeError` names the faulty line."""
    size: int | None = None
    domain: dict[str, tuple[float, float, float]] = {}
    rows: list[float] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.replace("\t", " ").partition(" ")
        rest = rest.strip()
        if not keyword[0].isalpha():
            if size is None:
                raise CubeError(f"line {number}: table data before LUT_3D_SIZE")
            if len(rows) == 3 * size**3:
                raise CubeError(f"line {number}: more than {size**3} table rows for size {size}")
            rows.extend(_numbers(number, line, 3))
            continue
        if rows:
            raise CubeError(f"line {number}: keyword {keyword} after the table data")
        if keyword in seen:
            raise CubeError(f"line {number}: {keyword} given twice")
        seen.add(keyword)
        if keyword == "TITLE":
            if len(rest) < 2 or not rest[0] == rest[-1] == '"':
                raise CubeError(f'line {number}: TITLE must be followed by a "quoted" title')
        elif keyword == "LUT_3D_SIZE":
            size = _size(number, rest)
        elif keyword in ("DOMAIN_MIN", "DOMAIN_MAX"):
            red, green, blue = _numbers(number, rest, 3)
            domain[keyword] = (red, green, blue)
        elif keyword == "LUT_3D_INPUT_RANGE":
            bottom, top = _numbers(number, rest, 2)
            domain["DOMAIN_MIN"], domain["DOMAIN_MAX"] = (bottom,) * 3, (top,) * 3
        elif keyword == "LUT_1D_SIZE":
            raise CubeError(f"line {number}: this is a 1D LUT; only 3D LUTs are supported")
        else:
            raise CubeError(f"line {number}: unknown keyword {keyword!r}")
    if size is None:
        raise CubeError("no LUT_3D_SIZE line: not a 3D .cube LUT")
    if len(rows) != 3 * size**3:
        raise CubeError(f"expected {size**3} table rows for size {size}, found {len(rows) // 3}")
    low = domain.get("DOMAIN_MIN", (0.0, 0.0, 0.0))
    high = domain.get("DOMAIN_MAX", (1.0, 1.0, 1.0))
    if any(a >= b for a, b in zip(low, high, strict=True)):
        raise CubeError(f"the domain minimum {low} is not below the maximum {high}")
    table = np.array(rows, dtype=np.float32).reshape(size, size, size, 3)
    return Lut3D(table, low, high)


def _size(number: int, text: str) -> int:
    parts = text.split()
    if len(parts) != 1 or not parts[0].isdigit() or not 2 <= int(parts[0]) <= MAX_SIZE:
        raise CubeError(
            f"line {number}: LUT_3D_SIZE must be one integer from 2 to {MAX_SIZE}, got {text!r}"
        )
    return int(parts[0])


def _numbers(number: int, text: str, count: int) -> list[float]:
    parts = text.split()
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(parts) != count or len(values) != count or not all(map(math.isfinite, values)):
        raise CubeError(f"line {number}: expected {count} numbers, got {text.strip()!r}")
    return values


# --- built-in looks ---------------------------------------------------------------------------


def _luma(r: Table, g: Table, b: Table) -> Table:
    luma: Table = 0.299 * r + 0.587 * g + 0.114 * b
    return luma


def _smoothstep(x: Table) -> Table:
    curve: Table = x * x * (3 - 2 * x)
    return curve


def _warm(r: Table, g: Table, b: Table) -> Channels:
    """Golden light: red and green lifted, blue held down; black and white stay neutral."""
    return r**0.85, g**0.95, b**1.2


def _cool(r: Table, g: Table, b: Table) -> Channels:
    """Blue hour: red held down, blue lifted."""
    return r**1.2, g**1.02, b**0.85


def _noir(r: Table, g: Table, b: Table) -> Channels:
    """Black and white with an S-curve: deeper shadows, brighter highlights."""
    luma = _luma(r, g, b)
    grey = luma + 0.6 * (_smoothstep(luma) - luma)
    return grey, grey, grey


def _teal_orange(r: Table, g: Table, b: Table) -> Channels:
    """The blockbuster look: shadows towards teal, mid-tones and skin towards orange."""
    luma = _luma(r, g, b)
    towards_orange = _smoothstep(luma)
    weight = 0.35 * 4 * luma * (1 - luma)  # neutral at black and white
    shift_r = weight * (2 * towards_orange - 1)
    shift_b = -shift_r
    saturated = [luma + 1.15 * (channel - luma) for channel in (r, g, b)]
    return saturated[0] + shift_r, saturated[1] + 0.1 * weight, saturated[2] + shift_b


BUILTIN: Final[Mapping[str, Callable[[Table, Table, Table], Channels]]] = {
    "cool": _cool,
    "noir": _noir,
    "teal_orange": _teal_orange,
    "warm": _warm,
}
"""The built-in looks by name, each a function of the input's r, g and b."""


def builtin_lut(name: str) -> Lut3D:
    """The built-in look ``name`` (a key of :data:`BUILTIN`) as a LUT of :data:`BUILTIN_SIZE`."""
    axis = np.linspace(0.0, 1.0, BUILTIN_SIZE, dtype=np.float32)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    channels = BUILTIN[name](r, g, b)
    table = np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
    return Lut3D(table)
