"""Channel routes: create, MIME type, ``/next``, delete, request validation (PROTOCOL.md 1.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from packages.testkit.tests.conformance.conftest import Channel


async def test_create_fixes_mime_type_from_expect_content(channel: Channel) -> None:
    assert (await channel.create("application/json")).status == 200
    await channel.publish(0, b"{}", content_type="video/MP2T")

    reply = await channel.get(0)

    assert reply.status == 200
    assert reply.body == b"{}"
    assert reply.header("Content-Type") == "application/json"


async def test_creating_an_existing_channel_keeps_its_mime_type(channel: Channel) -> None:
    await channel.create("application/json")
    assert (await channel.create("text/plain")).status == 200
    await channel.publish(0, b"{}")

    assert (await channel.get(0)).header("Content-Type") == "application/json"


async def test_auto_create_takes_the_first_segment_content_type(channel: Channel) -> None:
    await channel.publish(0, b"a", content_type="video/MP2T")
    await channel.publish(1, b"b", content_type="application/json")

    for seq in (0, 1):
        assert (await channel.get(seq)).header("Content-Type") == "video/MP2T"


async def test_channel_created_without_mime_type_serves_empty_content_type(
    channel: Channel,
) -> None:
    await channel.create()
    await channel.publish(0, b"x", content_type="video/MP2T")

    reply = await channel.get(0)

    assert reply.body == b"x"
    assert reply.headers.get("Content-Type", "") == ""


async def test_next_reports_the_next_write_index(channel: Channel) -> None:
    await channel.create()
    reply = await channel.get("next")
    assert reply.status == 200
    assert reply.body == b"0"
    assert reply.header("Lp-Trickle-Latest") == "0"
    assert reply.header("Lp-Trickle-Closed") is None

    await channel.publish(0, b"a")
    await channel.publish(1, b"b")

    reply = await channel.get("next")
    assert reply.body == b"2"
    assert reply.header("Lp-Trickle-Latest") == "2"


async def test_unknown_channel_is_404(channel: Channel) -> None:
    for seq in (0, -1, "next"):
        reply = await channel.get(seq)
        assert reply.status == 404, seq
        assert reply.body.strip() == b"Stream not found"
    reply = await channel.delete(0)
    assert reply.status == 404
    assert reply.body.strip() == b"Stream not found"


async def test_deleting_an_unknown_channel_is_400_invalid_stream(channel: Channel) -> None:
    reply = await channel.delete()

    assert reply.status == 400
    assert reply.body.strip() == b"Invalid stream"


async def test_deleted_channel_is_gone(channel: Channel) -> None:
    await channel.publish(0, b"a")

    assert (await channel.delete()).status == 200

    assert (await channel.get(0)).status == 404
    assert (await channel.get("next")).status == 404
    assert (await channel.delete(0)).status == 404
    assert (await channel.delete()).status == 400


async def test_auto_create_recreates_a_deleted_channel_from_scratch(channel: Channel) -> None:
    await channel.publish(0, b"old", content_type="video/MP2T")
    await channel.publish(1, b"old")
    await channel.delete()

    await channel.publish(0, b"new", content_type="application/json")

    reply = await channel.get(0)
    assert reply.body == b"new"
    assert reply.header("Content-Type") == "application/json"
    assert await channel.next_write() == 1


@pytest.mark.parametrize("seq", ["abc", "1.5", "0x1", "1e3", "9223372036854775808"])
async def test_non_integer_seq_is_400(channel: Channel, seq: str) -> None:
    await channel.publish(0, b"a")

    for reply in (
        await channel.get(seq),
        await channel.post(seq, b"x"),
        await channel.delete(seq),
    ):
        assert reply.status == 400, reply
        assert reply.body.strip() == b"Invalid idx"


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/0"), ("PATCH", "/0"), ("GET", ""), ("PUT", "")]
)
async def test_unknown_method_is_405(channel: Channel, method: str, path: str) -> None:
    await channel.publish(0, b"a")

    reply = await channel.request(method, channel.url + path)

    assert reply.status == 405


@pytest.mark.hardening
@pytest.mark.parametrize(("method", "seq"), [("GET", -3), ("POST", -2), ("DELETE", -1)])
async def test_negative_seq_other_than_the_special_ones_is_400(
    channel: Channel, method: str, seq: int
) -> None:
    """go-livepeer's handler panics here (the connection drops); byockit answers 400."""
    await channel.publish(0, b"a")

    reply = await channel.request(method, channel.seq_url(seq), data=b"x")

    assert reply.status == 400
    assert reply.body.strip() == b"Invalid idx"
    assert (await channel.get(0)).body == b"a"
