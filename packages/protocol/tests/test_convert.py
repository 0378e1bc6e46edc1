"""Reformatter (one swscale context per stream) and rgb_view (an rgb24 frame without a copy)."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest

from byockit.protocol.errors import MediaError
from byockit.protocol.media.convert import TO_YUV420, Reformatter, rgb_view
from byockit.testkit.synthetic import indexed_frame, read_index

W, H = 128, 72


def yuv(index: int, width: int = W, height: int = H) -> av.VideoFrame:
    """A yuv420p frame as a decoder hands it on, made by PyAV's own conversion."""
    rgb = av.VideoFrame.from_ndarray(indexed_frame(index, width, height), format="rgb24")
    return rgb.reformat(format="yuv420p")


def planes(frame: av.VideoFrame) -> list[np.ndarray[Any, Any]]:
    return [np.frombuffer(plane, np.uint8).astype(np.int16) for plane in frame.planes]


def test_yuv_to_rgb_matches_pyav_exactly_at_any_size() -> None:
    to_rgb = Reformatter("rgb24")
    for index, (width, height) in enumerate([(W, H), (171, 96), (W, H), (64, 36)]):
        frame = yuv(index)
        expected = frame.to_ndarray(format="rgb24", width=width, height=height)
        converted = to_rgb(frame, width, height)
        assert (converted.width, converted.height) == (width, height)
        assert converted.format.name == "rgb24"
        assert np.array_equal(converted.to_ndarray(), expected)


def test_rgb_to_yuv420_keeps_luma_and_averages_chroma() -> None:
    to_yuv420 = Reformatter("yuv420p", TO_YUV420)
    for index, size in enumerate([(W, H), (2 * W, 2 * H), (W, H)]):  # the context follows sizes
        rgb = indexed_frame(index, *size)
        converted = to_yuv420(rgb_view(rgb))
        assert (converted.format.name, converted.width, converted.height) == ("yuv420p", *size)
        reference = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        (y, u, v), (ref_y, ref_u, ref_v) = planes(converted), planes(reference)
        assert np.array_equal(y, ref_y)  # luma is not scaled: the filter cannot change it
        assert np.abs(u - ref_u).mean() < 2  # area averaging vs PyAV's bilinear
        assert np.abs(v - ref_v).mean() < 2
        assert read_index(converted.to_ndarray(format="rgb24")) == index


def test_the_converted_frame_keeps_the_timestamp() -> None:
    frame = rgb_view(indexed_frame(1, W, H))
    frame.pts = 9000
    converted = Reformatter("yuv420p", TO_YUV420)(frame)
    assert converted.pts == 9000


def test_a_frame_already_in_the_format_and_size_is_returned_as_is() -> None:
    frame = yuv(2)
    to_yuv420 = Reformatter("yuv420p")
    assert to_yuv420(frame) is frame
    assert to_yuv420(frame, W, H) is frame
    assert to_yuv420(frame, W // 2, H // 2) is not frame


def test_impossible_conversions_are_named() -> None:
    frame = rgb_view(indexed_frame(0, W, H))
    with pytest.raises(MediaError, match=r"cannot convert a 128x72 rgb24 frame to 0x0 yuv420p"):
        Reformatter("yuv420p")(frame, 0, 0)
    with pytest.raises(MediaError, match=r"to -2x72 yuv420p"):
        Reformatter("yuv420p")(frame, -2, H)
    with pytest.raises(ValueError, match="unknown pixel format 'rgb42'"):
        Reformatter("rgb42")


def test_rgb_view_shares_the_arrays_memory() -> None:
    rgb = indexed_frame(4, W, H)
    frame = rgb_view(rgb)
    assert (frame.format.name, frame.width, frame.height) == ("rgb24", W, H)
    rgb[:] = 0  # what the frame shows changes with the array: no copy was made
    assert not frame.to_ndarray().any()


def test_a_strided_crop_is_viewed_in_place() -> None:
    rgb = indexed_frame(5, 2 * W, 2 * H)
    crop = rgb[10 : 10 + H, 30 : 30 + W]
    frame = rgb_view(crop)
    assert (frame.width, frame.height) == (W, H)
    assert frame.planes[0].line_size == 2 * W * 3  # the rows of the whole array
    assert np.array_equal(frame.to_ndarray(), crop)
    converted = Reformatter("yuv420p", TO_YUV420)(frame)
    expected = Reformatter("yuv420p", TO_YUV420)(rgb_view(np.ascontiguousarray(crop)))
    for plane, expected_plane in zip(planes(converted), planes(expected), strict=True):
        assert np.array_equal(plane, expected_plane)


@pytest.mark.parametrize(
    "layout",
    [
        lambda rgb: rgb[:, :, ::-1],  # BGR as a view: pixels not packed
        lambda rgb: rgb[::-1],  # rows going backwards
        lambda rgb: rgb[:, ::2],  # every other pixel
    ],
)
def test_other_layouts_are_packed_first(layout: Any) -> None:
    view = layout(indexed_frame(6, 2 * W, H))
    frame = rgb_view(view)
    assert np.array_equal(frame.to_ndarray(), view)


@pytest.mark.parametrize(
    ("array", "described"),
    [
        (np.zeros((H, W, 3), np.float32), r"float32 \(72, 128, 3\)"),
        (np.zeros((H, W, 4), np.uint8), r"uint8 \(72, 128, 4\)"),
        (np.zeros((H, W), np.uint8), r"uint8 \(72, 128\)"),
    ],
)
def test_arrays_that_are_not_rgb_are_refused(array: np.ndarray[Any, Any], described: str) -> None:
    expected = rf"expected an \(H, W, 3\) uint8 RGB array, got {described}"
    with pytest.raises(MediaError, match=expected):
        rgb_view(array)
