"""Who may hold a control connection: caps in total and per uid, a reserve for root.

Every control connection costs the daemon a file descriptor, and an idle one costs
nothing to the client that opened it. Without caps one member of the read-only group
could open thousands and take the descriptors bots and root need. The rules:

* anyone but root and the daemon's own user holds at most :data:`MAX_PER_UID`
  connections, and all of them together at most :data:`MAX_CONNECTIONS`;
* root and the daemon's user may go :data:`PRIVILEGED_RESERVE` past the total cap, so
  ``wsgate status`` as root still answers while others have filled theirs;
* a connection that sends no request for :data:`IDLE_TIMEOUT` seconds is closed (a
  stream in progress is not idle).

Pure bookkeeping, no sockets: the server asks :meth:`Admission.admit` when a connection
arrives and calls :meth:`Admission.release` when it ends.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_PER_UID",
    "PRIVILEGED_RESERVE",
    "Admission",
    "AdmissionStatistics",
]

MAX_CONNECTIONS = 64
MAX_PER_UID = 16
PRIVILEGED_RESERVE = 8
IDLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class AdmissionStatistics:
    open: int
    open_by_uid: dict[int, int]
    refused: int


@dataclass
class Admission:
    max_total: int = MAX_CONNECTIONS
    max_per_uid: int = MAX_PER_UID
    reserve: int = PRIVILEGED_RESERVE
    open_by_uid: Counter[int] = field(default_factory=Counter)
    total: int = 0
    refused: int = 0

    def admit(self, uid: int, privileged: bool) -> str | None:
        """Count the connection in and return None, or return why it is refused."""
        if privileged:
            if self.total >= self.max_total + self.reserve:
                return self._refuse(
                    f"{self.total} control connections open, the limit even for root"
                )
        elif self.total >= self.max_total:
            return self._refuse(f"{self.total} control connections open (limit {self.max_total})")
        elif self.open_by_uid[uid] >= self.max_per_uid:
            return self._refuse(
                f"uid {uid} already holds {self.open_by_uid[uid]} control connections "
                f"(limit {self.max_per_uid} per user); close some"
            )
        self.open_by_uid[uid] += 1
        self.total += 1
        return None

    def release(self, uid: int) -> None:
        if self.open_by_uid[uid] > 0:
            self.open_by_uid[uid] -= 1
            self.total -= 1
            if not self.open_by_uid[uid]:
                del self.open_by_uid[uid]

    def _refuse(self, reason: str) -> str:
        self.refused += 1
        return reason

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(self.total, dict(self.open_by_uid), self.refused)

    def __repr__(self) -> str:
        return (
            f"<Admission open={self.total}/{self.max_total}+{self.reserve} "
            f"uids={len(self.open_by_uid)} refused={self.refused}>"
        )
