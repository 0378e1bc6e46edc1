"""The looks the demo cycles through, sent to the running stream as live params updates.

Each look is a params document for the reference effects chain
(:mod:`byockit.worker.reference`): the same body an app would send to the
gateway's ``/process/stream/update``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Final

import attrs

from byockit.client.errors import ClientError
from byockit.client.gateway import GatewayClient
from byockit.client.run import Progress
from byockit.client.session import StreamSession
from byockit.protocol.models import JSONObject

logger = logging.getLogger(__name__)


@attrs.frozen
class Look:
    name: str
    params: JSONObject


LOOKS: Final = (
    Look("cartoon", {"stages": [{"effect": "cartoon"}]}),
    Look("pixelate", {"stages": [{"effect": "pixelate", "block_size": 12}]}),
    Look("sketch", {"stages": [{"effect": "sketch"}]}),
    Look(
        "warm grade + cartoon",
        {
            "stages": [
                {"effect": "grade", "temperature": 0.6, "saturation": 1.4},
                {"effect": "cartoon", "levels": 4},
            ]
        },
    ),
    Look("noir", {"stages": [{"effect": "grade", "lut": "noir", "contrast": 1.3}]}),
)


class LookChanger:
    """Sends the next look to the stream every ``interval`` seconds, from the first progress on.

    :meth:`follow` is given each progress report of the run (it carries what
    it takes to reach the stream); the changes run in a task of their own
    until :meth:`close`. A refused or failed update is logged and counted;
    the demo goes on.
    """

    def __init__(self, interval: float, looks: tuple[Look, ...] = LOOKS) -> None:
        if not interval > 0:
            raise ValueError(f"the look interval must be > 0 seconds, got {interval!r}")
        if not looks:
            raise ValueError("at least one look is needed")
        self.looks: Final = looks
        self.interval: Final = interval
        self.current: Look = looks[0]
        """The look in force (the first one is the stream's start params)."""
        self.applied = 1
        """Looks the stream has taken, counting the first."""
        self.failed = 0
        """Updates the gateway refused or that could not be sent."""
        self._task: asyncio.Task[None] | None = None

    def follow(self, progress: Progress) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._cycle(progress), name="byockit-demo-looks")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _cycle(self, progress: Progress) -> None:
        async with GatewayClient(progress.gateway) as client:
            stream = StreamSession(client, progress.settings, progress.gateway, progress.urls)
            for turn in itertools.count(1):
                await asyncio.sleep(self.interval)
                look = self.looks[turn % len(self.looks)]
                try:
                    reply = await stream.update(look.params)
                except ClientError as exc:
                    logger.warning("could not change the look to %s: %s", look.name, exc)
                    self.failed += 1
                    continue
                if reply.status // 100 == 2:
                    self.current = look
                    self.applied += 1
                else:
                    logger.warning("the look %s was refused: %s", look.name, reply.body)
                    self.failed += 1
