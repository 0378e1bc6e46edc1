"""The little of H.264's Annex B byte stream the demuxer and decoder need to look at."""

from __future__ import annotations

from typing import Final

NAL_SLICE: Final = 1
NAL_IDR: Final = 5
NAL_SPS: Final = 7
NAL_PPS: Final = 8
NAL_AUD: Final = 9

_START_CODE: Final = b"\x00\x00\x01"


def leading_nal_types(access_unit: bytes) -> list[int]:
    """Types of an access unit's NAL units up to and including its first slice.

    Enough to tell an IDR picture and the parameter sets in front of it,
    without scanning the (large) slice data.
    """
    types = []
    at = access_unit.find(_START_CODE)
    while 0 <= at < len(access_unit) - 3:
        nal_type = access_unit[at + 3] & 0x1F
        types.append(nal_type)
        if NAL_SLICE <= nal_type <= NAL_IDR:
            break
        at = access_unit.find(_START_CODE, at + 3)
    return types
