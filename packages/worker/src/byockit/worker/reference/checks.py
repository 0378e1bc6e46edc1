"""Checks shared by the effects' parameters: numeric ranges and ``#rrggbb`` colours.

Every message names the parameter by its full path (``cartoon`` alone says
``'levels'``, a chain says ``'stages[1].levels'``) and what it accepts, so a
client sees exactly which slider went out of range.
"""

from __future__ import annotations

import re
from typing import Final

from byockit.worker.processor import ParamsRejected

_COLOR: Final = re.compile(r"#[0-9a-fA-F]{6}")

RGB = tuple[float, float, float]


def field_path(where: str, name: str) -> str:
    """A parameter's full name: ``name`` under ``where`` (``"stages[2]"``) or alone."""
    return f"{where}.{name}" if where else name


def check_range(where: str, name: str, value: float, low: float, high: float) -> None:
    """:class:`ParamsRejected` unless ``low <= value <= high`` (NaN is out of every range)."""
    if not low <= value <= high:
        raise ParamsRejected(
            f"parameter {field_path(where, name)!r} must be between {low} and {high}, got {value}"
        )


def is_color(text: str) -> bool:
    """Whether ``text`` is meant as a colour (it starts with ``#``) rather than a file path."""
    return text.startswith("#")


def parse_color(where: str, name: str, text: str) -> RGB:
    """``"#rrggbb"`` as (r, g, b) in [0, 1]; :class:`ParamsRejected` naming the parameter if not."""
    if not _COLOR.fullmatch(text):
        raise ParamsRejected(
            f"parameter {field_path(where, name)!r} must be a colour like '#00ff00', got {text!r}"
        )
    red, green, blue = (int(text[at : at + 2], 16) / 255 for at in (1, 3, 5))
    return red, green, blue
