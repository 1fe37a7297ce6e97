"""The descriptor budget: bots stop short of the limit, leaving a reserve."""

from __future__ import annotations

import os
from pathlib import Path

from wsgate.runtime.system.fdbudget import FdBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_room_until_the_reserve_counting_openings_between_listings(tmp_path: Path) -> None:
    for i in range(80):
        (tmp_path / str(i)).touch()
    clock = Clock()
    fds = FdBudget(reserve=10, limit=100, refresh=1.0, clock=clock, fd_dir=str(tmp_path))
    assert fds.in_use() == 80
    for _ in range(10):
        assert fds.room()
        fds.note_open()
    assert fds.in_use() == 90 and not fds.room() and fds.refused == 1
    for i in range(80, 85):  # five closed, five more listed: the listing wins after refresh
        (tmp_path / str(i - 80)).unlink()
    clock.now = 1.5
    assert fds.in_use() == 75 and fds.room()


def test_real_process_count_and_no_proc_never_refuses() -> None:
    fds = FdBudget()
    used = fds.in_use()
    assert used is not None and 0 < used <= len(os.listdir("/proc/self/fd")) + 1
    blind = FdBudget(limit=1, fd_dir="/nonexistent")
    assert blind.in_use() is None and blind.room()
