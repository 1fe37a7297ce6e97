"""Credential masking for everything wsgate logs or publishes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from wsgate.redact import RedactingFormatter, mask_text, mask_url, set_secrets, strip_query_params

LISTEN_KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"


@pytest.fixture(autouse=True)
def no_secrets() -> Iterator[None]:
    set_secrets([])
    yield
    set_secrets([])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("wss://api.bitfinex.com/ws/2", "wss://api.bitfinex.com/ws/2"),
        ("ws://h:1/ws/2?token=s3cret&x=1", "ws://h:1/ws/2?token=***&x=1"),
        (
            "ws://h/p?apiKey=A&signature=B&recvWindow=5",
            "ws://h/p?apiKey=***&signature=***&recvWindow=5",
        ),
        ("ws://h/p?listenKey=abc&streams=a/b", "ws://h/p?listenKey=***&streams=a/b"),
        ("ws://h/p?api_secret=1&access_token=2", "ws://h/p?api_secret=***&access_token=***"),
        ("wss://user:pw@h:9443/ws", "wss://***@h:9443/ws"),
        (f"wss://stream.binance.com:9443/ws/{LISTEN_KEY}", "wss://stream.binance.com:9443/ws/***"),
        (
            "wss://stream.binance.com:9443/ws/btcusdt@trade",
            "wss://stream.binance.com:9443/ws/btcusdt@trade",
        ),
        ("ws://h/stream?streams=btcusdt@depth@100ms", "ws://h/stream?streams=btcusdt@depth@100ms"),
        ("ws://[::1/", "***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_strip_query_params_keeps_every_other_pair_byte_for_byte() -> None:
    assert strip_query_params("a=%2F&token=x&TOKEN=y&b", ["token"]) == "a=%2F&b"
    assert strip_query_params("token=x", ["token"]) == ""
    assert strip_query_params("tokens=1", ["token"]) == "tokens=1"
    assert strip_query_params("", ["token"]) == ""


def test_mask_text_masks_urls_pairs_bearers_and_configured_secrets() -> None:
    set_secrets(["hunter2-long-secret", "short", None, ""])
    text = (
        "connecting to ws://127.0.0.1:9/ws/2?token=abc123 failed; "
        "query token=abc123&x=1; header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig; "
        "body had hunter2-long-secret; the short word stays; bearer token missing"
    )
    out = mask_text(text)
    assert "abc123" not in out and "eyJhbGci" not in out and "hunter2" not in out
    assert "ws://127.0.0.1:9/ws/2?token=***" in out
    assert "the short word stays" in out  # secrets under MIN_SECRET_LEN are not scrubbed
    assert "bearer token missing" in out


def test_formatter_scrubs_tracebacks_too() -> None:
    set_secrets(["s3cret-value-xyz"])
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("cannot reach wss://u:p@h/x?key=s3cret-value-xyz")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed %s", ("it",), None)
        record.exc_info = sys.exc_info()
    out = formatter.format(record)
    assert "Traceback" in out and "RuntimeError" in out
    assert "s3cret-value-xyz" not in out and "u:p@" not in out
