"""Preallocated working tensors, so that an effect allocates nothing per frame once warm.

Each stage of an effect owns one :class:`Buffers`. It asks for a tensor by
name on every frame and gets the same one back while the frame's shape,
memory layout, device and dtype stay the same; a change (a new stream size, a
move to another device) replaces that tensor, so the set stays bounded by the
stage's names. Ops then write into these tensors with ``out=`` and in-place
variants instead of returning new ones.
"""

from __future__ import annotations

import torch


class Buffers:
    """A stage's working tensors by name, reused while shape, layout, device and dtype hold."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def get(
        self,
        name: str,
        shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """A contiguous tensor of this shape (its contents are whatever was left in it)."""
        tensor = self._tensors.get(name)
        if (
            tensor is None
            or tuple(tensor.shape) != shape
            or tensor.device != device
            or tensor.dtype != dtype
        ):
            tensor = torch.empty(shape, device=device, dtype=dtype)
            self._tensors[name] = tensor
        return tensor

    def like(
        self, name: str, model: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """A dense tensor with ``model``'s shape, device and dimension order (channels-last stays).

        ``model`` may be a strided view (a crop, a permutation): the buffer
        keeps the order of its dimensions in memory, not its gaps.
        """
        dtype = model.dtype if dtype is None else dtype
        order = _memory_order(model)
        tensor = self._tensors.get(name)
        if (
            tensor is None
            or tensor.shape != model.shape
            or _memory_order(tensor) != order
            or tensor.device != model.device
            or tensor.dtype != dtype
        ):
            stored = torch.empty(
                [model.shape[dim] for dim in order], device=model.device, dtype=dtype
            )
            tensor = stored.permute(*sorted(range(len(order)), key=order.__getitem__))
            self._tensors[name] = tensor
        return tensor

    def pointers(self) -> dict[str, int]:
        """Each buffer's data address, by name: what stays the same while buffers are reused."""
        return {name: tensor.data_ptr() for name, tensor in self._tensors.items()}


def _memory_order(tensor: torch.Tensor) -> tuple[int, ...]:
    """The tensor's dimensions from the outermost in memory to the innermost."""
    strides = tensor.stride()
    return tuple(sorted(range(tensor.ndim), key=lambda dim: -strides[dim]))
