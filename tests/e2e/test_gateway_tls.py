"""wss for bots: gateway.tls_cert_file/tls_key_file, the non-loopback rule, a reload
re-reads the certificate."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.simstack import Route, stack
from wsgate.config import parse_config
from wsgate.errors import ConfigError

BASE = """
[routes.r]
dialect = "bitfinex"
type = "market_data"
[[routes.r.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"
"""


def make_cert(directory: Path, name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def renew_in_place(directory: Path, cert: str, key: str) -> str:
    """A new certificate at the same paths (as an ACME client renews); its own copy back."""
    second, second_key = make_cert(directory, "second")
    Path(cert).write_bytes(Path(second).read_bytes())
    Path(key).write_bytes(Path(second_key).read_bytes())
    return second


def trusting(cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cert)
    return ctx


def test_non_loopback_listen_needs_tls_or_allow_plaintext(tmp_path: Path) -> None:
    text = '[gateway]\nlisten = "0.0.0.0:8765"\n' + BASE
    with pytest.raises(ConfigError) as err:
        parse_config(text, "g.toml")
    (p,) = err.value.problems
    assert p.path == "gateway.listen" and p.line == 2 and "tls_cert_file" in (p.hint or "")
    ok = parse_config(text.replace("\n[routes", "allow_plaintext = true\n[routes", 1))
    assert ok.gateway.allow_plaintext and not ok.gateway.tls
    cert, key = make_cert(tmp_path, "gw")
    tls = parse_config(
        text.replace("\n[routes", f'\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n[routes', 1)
    )
    assert tls.gateway.tls and tls.gateway.tls_key_file == key
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("\n[routes", f'\ntls_cert_file = "{cert}"\n[routes', 1))
    assert [p.path for p in err.value.problems] == ["gateway.tls_key_file"]
    with pytest.raises(ConfigError) as err:
        parse_config(
            text.replace(
                "\n[routes", f'\ntls_cert_file = "{key}"\ntls_key_file = "{key}"\n[routes', 1
            )
        )
    assert [p.path for p in err.value.problems] == ["gateway.tls_cert_file"]
    assert parse_config(BASE).gateway.tls is False  # loopback: plain ws as before


def test_bots_connect_with_wss_and_a_reload_re_reads_the_certificate(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "first")

    async def scenario() -> None:
        gateway = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'
        async with stack({"bitfinex": Route("bitfinex")}, gateway=gateway) as (gw, _sim):
            url = gw.url("bitfinex")
            assert url.startswith("wss://")
            async with connect(url, ssl=trusting(cert)) as ws:
                info = json.loads(await ws.recv())
                assert info["event"] == "info"
            with pytest.raises(ssl.SSLError):  # plain trust store: our self-signed cert fails
                async with connect(url, ssl=ssl.create_default_context()):
                    pass
            # Renewed in place (same paths): a reload re-reads it for new connections.
            second = renew_in_place(tmp_path, cert, key)
            note = gw.daemon.gateway.reload_tls(cert, key)  # what a reload calls
            assert note is not None and "re-read" in note
            async with connect(url, ssl=trusting(second)) as ws:
                assert json.loads(await ws.recv())["event"] == "info"

    asyncio.run(scenario())
