"""The process's file descriptors: how many are in use, and whether a new bot may take one.

Bots are the one thing that can grow to the descriptor limit (``gateway.max_sessions``
may be set above ``LimitNOFILE``). When they reach it, nothing else can open: not the
control socket for root's ``wsgate status``, not an upstream reconnect, not SQLite.
The gateway therefore refuses a new bot while fewer than :data:`FD_RESERVE` descriptors
are free.

Counting ``/proc/self/fd`` lists a directory, so it happens at most once per
``refresh`` seconds; openings in between are added by the caller
(:meth:`FdBudget.note_open`). Without ``/proc`` the budget never refuses.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

__all__ = ["FD_RESERVE", "FdBudget"]

FD_RESERVE = 128  # > the control socket's 72 connections, plus reconnects and the database


class FdBudget:
    def __init__(
        self,
        reserve: int = FD_RESERVE,
        *,
        limit: int | None = None,
        refresh: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        fd_dir: str = "/proc/self/fd",
    ) -> None:
        if limit is None:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        self.limit = limit
        self.reserve = reserve
        self.refresh = refresh
        self.clock = clock
        self.fd_dir = fd_dir
        self.refused = 0
        self._counted: int | None = None
        self._counted_at = 0.0
        self._since = 0  # openings noted since the last count

    def in_use(self) -> int | None:
        """Descriptors in use (a count at most ``refresh`` s old plus openings since)."""
        now = self.clock()
        if self._counted is None or now - self._counted_at >= self.refresh:
            try:
                self._counted = len(os.listdir(self.fd_dir))
            except OSError:
                return None
            self._counted_at, self._since = now, 0
        return self._counted + self._since

    def note_open(self) -> None:
        self._since += 1

    def room(self) -> bool:
        """Whether one more bot may open a descriptor and leave the reserve intact."""
        used = self.in_use()
        if used is None or used < self.limit - self.reserve:
            return True
        self.refused += 1
        return False

    def __repr__(self) -> str:
        return f"<FdBudget limit={self.limit} reserve={self.reserve} refused={self.refused}>"
