"""Small image filters shared by the effects, written as shifted views of a padded buffer.

A 3x3 filter is a handful of adds of the padded image shifted by one pixel
(separable kernels take two passes of three). On a single-channel image this
is faster than ``conv2d`` on the CPU (no im2col, no weight layout), works on
any memory layout, and writes into preallocated buffers, where ``conv2d``
returns a new tensor every call. Borders are replicated, so the frame's edge
is not taken for an edge in the picture.

Single-channel images here are ``(H, W)``; a padded one is ``(H + 2, W + 2)``
with the image in ``[1:-1, 1:-1]``.
"""

from __future__ import annotations

from typing import Final

import torch

from byockit.worker.reference.buffers import Buffers

LUMA: Final = (0.299, 0.587, 0.114)
"""BT.601 luma weights of red, green and blue."""


def padded(buffers: Buffers, name: str, image: torch.Tensor) -> torch.Tensor:
    """A single-channel buffer with a one-pixel border for ``image``'s (3, H, W) size."""
    return buffers.get(name, (image.shape[1] + 2, image.shape[2] + 2), image.device)


def inner(pad: torch.Tensor) -> torch.Tensor:
    """The image part of a padded buffer (a view)."""
    return pad[1:-1, 1:-1]


def luminance(image: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The (H, W) luma of a (3, H, W) RGB image, into ``out``."""
    torch.mul(image[0], LUMA[0], out=out)
    out.add_(image[1], alpha=LUMA[1])
    return out.add_(image[2], alpha=LUMA[2])


def replicate_border(pad: torch.Tensor) -> torch.Tensor:
    """Fill a padded buffer's border with copies of the image's outermost pixels."""
    pad[1:-1, 0].copy_(pad[1:-1, 1])
    pad[1:-1, -1].copy_(pad[1:-1, -2])
    pad[0].copy_(pad[1])
    pad[-1].copy_(pad[-2])
    return pad


def blur(pad: torch.Tensor, out: torch.Tensor, buffers: Buffers) -> torch.Tensor:
    """The 3x3 binomial blur (``[1, 2, 1]`` each way) of a padded image, into ``out`` (H, W)."""
    rows = buffers.get("blur.rows", (pad.shape[0] - 2, pad.shape[1]), pad.device)
    torch.add(pad[:-2], pad[2:], out=rows).add_(pad[1:-1], alpha=2)
    torch.add(rows[:, :-2], rows[:, 2:], out=out).add_(rows[:, 1:-1], alpha=2)
    return out.mul_(1 / 16)


def gradient(pad: torch.Tensor, out: torch.Tensor, buffers: Buffers) -> torch.Tensor:
    """The Sobel gradient magnitude of a padded image, into ``out`` (H, W).

    Scaled so that a sharp step of height ``h`` reads ``h`` on the two pixels
    beside it: thresholds are in the image's own units.
    """
    height, width = pad.shape[0] - 2, pad.shape[1] - 2
    across = buffers.get("gradient.x", (height, width), pad.device)
    rows = buffers.get("gradient.rows", (height, width + 2), pad.device)
    torch.add(pad[:-2], pad[2:], out=rows).add_(pad[1:-1], alpha=2)
    torch.sub(rows[:, 2:], rows[:, :-2], out=across)
    columns = buffers.get("gradient.columns", (height + 2, width), pad.device)
    torch.add(pad[:, :-2], pad[:, 2:], out=columns).add_(pad[:, 1:-1], alpha=2)
    torch.sub(columns[2:], columns[:-2], out=out)
    out.mul_(out).addcmul_(across, across)
    return out.sqrt_().mul_(1 / 4)


def ramp(values: torch.Tensor, start: float) -> torch.Tensor:
    """In place: 0 below ``start``, rising linearly to 1 at ``2 * start`` (a soft threshold)."""
    return values.sub_(start).mul_(1 / start).clamp_(0, 1)
