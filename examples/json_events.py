"""Send and read JSON documents on a trickle channel, as a worker's events channel does.

One document per segment, ``{"keep":"alive"}`` keepalives dropped by the
reader, and a malformed segment reported to ``on_invalid`` without ending
the stream.

    python examples/json_events.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from byockit.protocol.errors import ParseError
from byockit.protocol.trickle import JsonReader, JsonWriter, TricklePublisher, TrickleSubscriber
from byockit.testkit.trickle_server import TrickleServer


async def main() -> tuple[list[Any], list[ParseError]]:
    """Returns the documents read and the problems reported."""
    problems: list[ParseError] = []
    async with TrickleServer() as server:
        url = server.create_channel("events", "application/json")
        async with (
            TricklePublisher(url, "application/json") as publisher,
            TrickleSubscriber(url, start=0) as subscriber,
        ):
            writer = JsonWriter(publisher)
            await writer.send({"type": "status", "state": "ONLINE"})
            await writer.send_keepalive()
            await publisher.write_segment(b"{not json")
            await writer.send({"type": "stopped"})

            documents: list[Any] = []
            async for document in JsonReader(subscriber, on_invalid=problems.append):
                documents.append(document)
                if document.get("type") == "stopped":
                    break
    return documents, problems


if __name__ == "__main__":
    documents, problems = asyncio.run(main())
    for document in documents:
        print("read:", document)
    for problem in problems:
        print("reported:", problem)
