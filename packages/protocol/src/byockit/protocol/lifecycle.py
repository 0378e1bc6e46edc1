"""The two lifecycles byockit objects have, so ``async with`` means the same everywhere.

- :class:`Service`: runs between ``start()`` and ``stop()`` (servers, WebRTC
  links); ``async with`` starts it and stops it.
- :class:`Closeable`: usable from construction until ``close()`` (clients,
  sources, sinks); ``async with`` closes it.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Service(abc.ABC):
    """Runs between :meth:`start` and :meth:`stop`; ``async with`` does both."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start running."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop running and release everything."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Closeable(abc.ABC):
    """Usable until :meth:`close`; ``async with`` closes it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what the object holds."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
