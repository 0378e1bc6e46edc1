"""Files that effect parameters name (a ``.cube`` LUT, a background image), read once.

Parameters are checked when they arrive, so a missing or broken file is
refused there (the stream keeps its previous look) rather than failing every
frame. What was read is kept, keyed by the file's path, size and modification
time, so that moving a slider does not re-read a LUT, and a file edited in
place is read again when parameters name it next. Frames use what was
accepted (:meth:`Assets.accepted_lut`, :meth:`Assets.accepted_image`), never
the file system: a file deleted or broken after its parameters were accepted
changes nothing until parameters name it again. The caches are small and
per processor.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from byockit.worker.processor import ParamsRejected
from byockit.worker.reference.checks import field_path
from byockit.worker.reference.luts import BUILTIN, CubeError, Lut3D, builtin_lut, read_cube

MAX_IMAGE_SIDE: Final = 8192
"""The widest or tallest background image read."""
CAPACITY: Final = 8
"""Files kept at once; the least recently used goes first."""

RGBImage = npt.NDArray[np.uint8]


class ImageError(ValueError):
    """A file that is not a readable image."""


class Assets:
    """LUTs and images by path, read on first use and kept while the file is unchanged."""

    def __init__(self) -> None:
        self._files: OrderedDict[tuple[object, ...], Lut3D | RGBImage] = OrderedDict()
        self._accepted: OrderedDict[tuple[object, ...], Lut3D | RGBImage] = OrderedDict()
        self._lock = threading.Lock()

    def lut(self, where: str, name: str, value: str) -> Lut3D:
        """The LUT ``value`` names: a built-in look or a ``.cube`` file.

        :class:`ParamsRejected` naming the parameter when it is neither.
        """
        if value in BUILTIN:
            found = self._cached(("builtin", value), lambda: builtin_lut(value))
        else:
            try:
                found = self._cached(_file_key("cube", value), lambda: read_cube(value))
                self._remember(("cube", value), found)
            except (OSError, CubeError) as exc:
                looks = ", ".join(sorted(BUILTIN))
                raise ParamsRejected(
                    f"parameter {field_path(where, name)!r} must be a built-in LUT ({looks}) "
                    f"or a .cube file: {value!r}: {_reason(exc)}"
                ) from None
        assert isinstance(found, Lut3D)
        return found

    def accepted_lut(self, value: str) -> Lut3D:
        """The LUT :meth:`lut` last gave for ``value``, without looking at the file again.

        Read now (as :meth:`lut` does) if it never did, or has forgotten it.
        """
        with self._lock:
            found = self._accepted.get(("cube", value))
        if not isinstance(found, Lut3D):
            return self.lut("", "lut", value)
        return found

    def image(self, where: str, name: str, value: str) -> RGBImage:
        """The (H, W, 3) uint8 RGB picture in ``value``; :class:`ParamsRejected` if unreadable."""
        try:
            found = self._cached(_file_key("image", value), lambda: read_image(value))
            self._remember(("image", value), found)
        except (OSError, ImageError) as exc:
            raise ParamsRejected(
                f"parameter {field_path(where, name)!r} must be a colour '#rrggbb' "
                f"or an image file: {value!r}: {_reason(exc)}"
            ) from None
        assert isinstance(found, np.ndarray)
        return found

    def accepted_image(self, value: str) -> RGBImage:
        """The picture :meth:`image` last gave for ``value``, without looking at the file again.

        Read now (as :meth:`image` does) if it never did, or has forgotten it.
        """
        with self._lock:
            found = self._accepted.get(("image", value))
        if not isinstance(found, np.ndarray):
            return self.image("", "background", value)
        return found

    def _remember(self, key: tuple[object, ...], value: Lut3D | RGBImage) -> None:
        with self._lock:
            self._accepted[key] = value
            self._accepted.move_to_end(key)
            while len(self._accepted) > CAPACITY:
                self._accepted.popitem(last=False)

    def _cached(
        self, key: tuple[object, ...], read: Callable[[], Lut3D | RGBImage]
    ) -> Lut3D | RGBImage:
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        value = read()
        with self._lock:
            self._files[key] = value
            while len(self._files) > CAPACITY:
                self._files.popitem(last=False)
        return value


def read_image(path: str) -> RGBImage:
    """The first picture of an image (or video) file as (H, W, 3) uint8 RGB, read with PyAV."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ImageError("the file has no picture in it")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if max(width, height) > MAX_IMAGE_SIDE:
                raise ImageError(
                    f"the image is {width}x{height}; at most {MAX_IMAGE_SIDE} pixels a side"
                )
            for frame in container.decode(stream):
                return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    except av.FFmpegError as exc:
        raise ImageError(f"not a readable image ({exc})") from None
    raise ImageError("the file has no picture in it")


def _file_key(kind: str, path: str) -> tuple[object, ...]:
    """What identifies a file's contents cheaply: its path, size and modification time."""
    status = os.stat(path)
    return kind, os.path.abspath(path), status.st_size, status.st_mtime_ns


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
