import pytest

from wsgate.core.endpoints import endpoint_for_new_connection


def test_weighted_share_and_config_order_ties() -> None:
    weights = [("a", 2), ("b", 1)]
    counts: dict[str, int] = {}
    picks = []
    for _ in range(6):
        name = endpoint_for_new_connection(weights, counts)
        counts[name] = counts.get(name, 0) + 1
        picks.append(name)
    assert counts == {"a": 4, "b": 2}
    assert picks[0] == "a"


def test_zero_weight_gets_nothing_unless_all_are_zero() -> None:
    assert endpoint_for_new_connection([("a", 0), ("b", 1)], {"b": 5}) == "b"
    assert endpoint_for_new_connection([("a", 0), ("b", 0)], {"a": 1}) == "b"
    with pytest.raises(ValueError):
        endpoint_for_new_connection([], {})
