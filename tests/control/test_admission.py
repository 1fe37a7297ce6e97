"""Control connection admission: total and per-uid caps, a reserve for root."""

from __future__ import annotations

from wsgate.control.admission import Admission

ROOT, ALICE, BOB = 0, 1000, 1001


def test_per_uid_cap_then_total_cap_then_root_reserve() -> None:
    a = Admission(max_total=5, max_per_uid=3, reserve=2)
    assert [a.admit(ALICE, False) for _ in range(3)] == [None, None, None]
    refused = a.admit(ALICE, False)
    assert refused is not None and "uid 1000 already holds 3" in refused
    assert [a.admit(BOB, False) for _ in range(2)] == [None, None]
    refused = a.admit(BOB, False)
    assert refused is not None and "limit 5" in refused  # total, although bob has only 2
    # Root goes past the total by the reserve, and no further.
    assert [a.admit(ROOT, True) for _ in range(2)] == [None, None]
    assert a.admit(ROOT, True) is not None
    assert a.statistics().open == 7 and a.statistics().refused == 3
    a.release(ALICE)
    assert a.admit(BOB, False) is not None  # still 6 open: over the total for non-root
    a.release(ROOT)
    a.release(ROOT)
    assert a.admit(BOB, False) is None
    assert a.statistics().open_by_uid == {ALICE: 2, BOB: 3}


def test_release_of_an_unknown_uid_changes_nothing() -> None:
    a = Admission()
    a.release(ALICE)
    assert a.statistics().open == 0 and repr(a).startswith("<Admission open=0/64+8")
