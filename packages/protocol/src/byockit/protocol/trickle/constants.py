"""Trickle protocol constants (PROTOCOL.md section 1), shared by client and server."""

from __future__ import annotations

from typing import Final

# Headers (PROTOCOL.md 1.2). HTTP header names are case-insensitive.
SEQ_HEADER: Final = "Lp-Trickle-Seq"
LATEST_HEADER: Final = "Lp-Trickle-Latest"
CLOSED_HEADER: Final = "Lp-Trickle-Closed"
RESET_HEADER: Final = "Lp-Trickle-Reset"
EXPECT_CONTENT_HEADER: Final = "Expect-Content"

CLOSED_VALUE: Final = "terminated"
"""Value of ``Lp-Trickle-Closed`` when a channel has ended."""

# Status codes (PROTOCOL.md 1.4).
STATUS_SEGMENT_NOT_FOUND: Final = 470
"""No such segment (yet, or any more): the answer names ``Lp-Trickle-Latest``."""

ENTRY_NOT_FOUND_BODY: Final = "Entry not found"

# Special sequence numbers (PROTOCOL.md 1.3).
SEQ_NEXT: Final = -1
"""POST: the server's next write index. GET: wait for the next segment."""
SEQ_CURRENT: Final = -2
"""GET only: the segment being written now (or the last one written)."""

RING_SIZE: Final = 5
"""Segments a channel keeps; segment N lives in slot N mod 5."""

NEXT_PATH: Final = "next"
"""``GET {channel}/next`` answers the next write index."""

# MIME types of the BYOC channels (PROTOCOL.md 3).
MIME_MPEGTS: Final = "video/mp2t"
MIME_JSON: Final = "application/json"
MIME_JSONL: Final = "application/jsonl"

KEEPALIVE: Final = {"keep": "alive"}
"""The control/events keepalive document; readers drop it."""
