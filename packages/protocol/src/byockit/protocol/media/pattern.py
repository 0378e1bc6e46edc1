"""An indexed test pattern: frames that carry their own index, readable after lossy coding.

Every frame shows, in its top third, a code of large black and white cells:
its index (24 bits) and a 12-bit CRC of it, with a white and a black
reference cell at the ends of each row. Reading compares each cell with its
row's references, so the code survives lossy H.264 at usual quality,
brightness/contrast changes, colour tints, even inversion, and (since cells
are placed in fractions of the frame) a resize. Below the code a gradient
scrolls and a box moves, so the pattern looks and encodes like video.

It lives here, with the media code, because both the testkit (synthetic
clips) and the client (a test pattern source, latency matching) use it at
runtime.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

INDEX_BITS: Final = 24
MAX_INDEX: Final = (1 << INDEX_BITS) - 1
CRC_BITS: Final = 12
_CRC_POLY: Final = 0x80F
ROWS: Final = 3
COLUMNS: Final = 14
"""Cells per row: a white reference, 12 code cells, a black reference."""
_CELL_HEIGHT: Final = 1 / 9
"""Row height as a fraction of the frame height (square cells at 16:9)."""
_MIN_CONTRAST: Final = 40.0
"""Least luma difference between a row's references for a code to be read."""
_AMBIGUOUS: Final = (0.3, 0.7)
"""A code cell this far between its references (as a fraction) is unreadable."""

RGBImage = npt.NDArray[np.uint8]


def _crc(value: int) -> int:
    crc = 0
    for shift in range(INDEX_BITS - 1, -1, -1):
        feedback = ((crc >> (CRC_BITS - 1)) ^ (value >> shift)) & 1
        crc = (crc << 1) & ((1 << CRC_BITS) - 1)
        if feedback:
            crc ^= _CRC_POLY
    return crc


def _code_bits(index: int) -> list[int]:
    word = index << CRC_BITS | _crc(index)
    total = INDEX_BITS + CRC_BITS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def _cell_bounds(width: int, height: int, row: int, column: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a cell in a frame of this size."""
    return (
        round(row * _CELL_HEIGHT * height),
        round((row + 1) * _CELL_HEIGHT * height),
        round(column * width / COLUMNS),
        round((column + 1) * width / COLUMNS),
    )


def indexed_frame(index: int, width: int = 640, height: int = 360) -> RGBImage:
    """An (H, W, 3) uint8 RGB frame showing ``index`` (0 to 2**24 - 1) and a moving pattern."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index must be 0-{MAX_INDEX}, got {index}")
    if width < 4 * COLUMNS or height * _CELL_HEIGHT < 4:
        raise ValueError(f"frame {width}x{height} is too small for the index code")
    band = round(ROWS * _CELL_HEIGHT * height)
    x = np.arange(width, dtype=np.int64)[None, :]
    y = np.arange(height - band, dtype=np.int64)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    below = image[band:]
    below[..., 0] = (x + 3 * index) % 256
    below[..., 1] = (2 * y + x // 2 + index) % 256
    below[..., 2] = (255 - (x + y) // 3 - 5 * index) % 256
    box = max(2, (height - band) // 4)
    box_left = (index * max(1, width // 60)) % (width - box)
    box_top = (height - band - box) // 2
    below[box_top : box_top + box, box_left : box_left + box] = 255
    bits = iter(_code_bits(index))
    for row in range(ROWS):
        for column in range(COLUMNS):
            if column == 0:
                value = 255
            elif column == COLUMNS - 1:
                value = 0
            else:
                value = 255 * next(bits)
            top, bottom, left, right = _cell_bounds(width, height, row, column)
            image[top:bottom, left:right] = value
    return image


def read_index(image: npt.NDArray[Any]) -> int:
    """The index a frame of :func:`indexed_frame` shows; :class:`ValueError` if none is readable.

    ``image`` is (H, W, 3) RGB or a (H, W) luma plane: a decoded frame's Y
    plane reads as well, without converting the frame.
    """
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(
            f"expected an (H, W, 3) RGB image or an (H, W) luma plane, got shape {image.shape}"
        )
    height, width = image.shape[:2]
    if width < 2 * COLUMNS or height * _CELL_HEIGHT < 2:
        raise ValueError(f"image {width}x{height} is too small to hold an index code")
    bits = []
    for row in range(ROWS):
        levels = []
        for column in range(COLUMNS):
            top, bottom, left, right = _cell_bounds(width, height, row, column)
            dy, dx = (bottom - top) // 4, (right - left) // 4
            cell = image[top + dy : bottom - dy, left + dx : right - dx]
            levels.append(float(cell.mean()))
        white, black = levels[0], levels[-1]
        contrast = white - black
        if abs(contrast) < _MIN_CONTRAST:
            raise ValueError(f"no index code: row {row} references differ by {abs(contrast):.0f}")
        for column, level in enumerate(levels[1:-1], start=1):
            share = (level - black) / contrast
            if _AMBIGUOUS[0] < share < _AMBIGUOUS[1]:
                raise ValueError(f"no index code: cell {row},{column} is neither black nor white")
            bits.append(int(share >= 0.5))
    word = 0
    for bit in bits:
        word = word << 1 | bit
    index, crc = word >> CRC_BITS, word & ((1 << CRC_BITS) - 1)
    if _crc(index) != crc:
        raise ValueError("no index code: checksum mismatch")
    return index
