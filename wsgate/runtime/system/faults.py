"""One error policy for work done per frame or per tick: count, log once with context, serve on.

A failure while handling one upstream frame, one timer tick or one queued send is a bug
in that step, not a reason to drop a connection, a route or the daemon. Every such loop
(the upstream readers, the hub's tick, application-ping and writer loops, the daemon's
rebalancer, the alerts tick, the depth-sync fetches, the session flusher) hands the
exception to :meth:`Faults.record`:

* it is counted by *site* (``hub.tick``, ``upstream.frame``, ...), shown in ``wsgate
  status`` (``handler_errors``) and in ``/metrics`` (``wsgate_handler_errors_total``);
* the first failure of each (site, exception type) is logged at ERROR with its traceback
  and context; repeats are logged at DEBUG only, so a bug on the hot path cannot flood
  the log at the frame rate;
* the loop carries on with the next frame or tick.

Cancellation is never caught (it is a ``BaseException``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FaultStats", "Faults", "every"]

log = logging.getLogger("wsgate.faults")


@dataclass(frozen=True)
class FaultStats:
    total: int
    by_site: dict[str, int]
    last: str | None  # "<site>: <ExceptionType>: <message>" of the latest failure


class Faults:
    def __init__(self) -> None:
        self._by_site: dict[str, int] = {}
        self._logged: set[tuple[str, type[BaseException]]] = set()
        self._last: str | None = None

    def record(self, site: str, exc: Exception, context: str = "") -> None:
        """Count one failure at ``site``; log it when it is the first of its kind."""
        self._by_site[site] = self._by_site.get(site, 0) + 1
        self._last = f"{site}: {type(exc).__name__}: {exc}"
        kind = (site, type(exc))
        where = f"{site} ({context})" if context else site
        if kind in self._logged:
            log.debug("%s failed again: %r", where, exc)
            return
        self._logged.add(kind)
        log.error(
            "%s failed; carrying on (repeats of %s here are only counted): %s",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def count(self, site: str) -> int:
        return self._by_site.get(site, 0)

    def statistics(self) -> FaultStats:
        return FaultStats(sum(self._by_site.values()), dict(self._by_site), self._last)

    def __repr__(self) -> str:
        return f"<Faults total={sum(self._by_site.values())} sites={len(self._by_site)}>"


async def every(
    interval: float | Callable[[], float],
    step: Callable[[], object],
    faults: Faults,
    site: str,
    context: str = "",
) -> None:
    """Run ``step`` every ``interval`` seconds for ever, under the error policy."""
    while True:
        await asyncio.sleep(interval() if callable(interval) else interval)
        try:
            step()
        except Exception as exc:
            faults.record(site, exc, context)
