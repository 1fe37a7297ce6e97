"""join_url: an endpoint's own path and query survive a session's sub-path and query."""

from __future__ import annotations

import pytest

from wsgate.runtime.downstream.rest_proxy import RestProxy
from wsgate.urls import join_url


@pytest.mark.parametrize(
    ("base", "addition", "expected"),
    [
        ("wss://h/ws?foo=1", "/abc?x=2", "wss://h/ws/abc?foo=1&x=2"),
        ("wss://h/ws?foo=1", "/ws/LISTENKEY", "wss://h/ws/ws/LISTENKEY?foo=1"),
        ("wss://h?foo=1", "/ws/k", "wss://h/ws/k?foo=1"),
        ("wss://h:9443?foo=1", "?streams=a@trade", "wss://h:9443?foo=1&streams=a@trade"),
        ("wss://h/ws/2", "", "wss://h/ws/2"),
        ("wss://h/ws/", "/stream", "wss://h/ws/stream"),
        ("wss://h", "/stream?streams=x", "wss://h/stream?streams=x"),
        ("wss://u:p@h/a?k=%20v", "/b?q=%2F", "wss://u:p@h/a/b?k=%20v&q=%2F"),
    ],
)
def test_join_url_merges_path_and_query_where_they_belong(
    base: str, addition: str, expected: str
) -> None:
    assert join_url(base, addition) == expected


def test_rest_target_keeps_the_rest_url_query() -> None:
    url = RestProxy.target("https://h/api/v3?tenant=7", "/api/v3/depth", "symbol=BTCUSDT")
    assert url == "https://h/api/v3/depth?tenant=7&symbol=BTCUSDT"
