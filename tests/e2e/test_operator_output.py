"""What an operator reads: tables never truncated when piped, `--json` everywhere, the demo's
simulators found without flags. The real CLI against a real `wsgate run --demo`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import WSGATE, free_port, stop_daemon, wait_until


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, str]]:
    """A demo daemon; yields the environment a client needs (only $WSGATE_SOCKET, no flags)."""
    directory = Path(tempfile.mkdtemp(prefix="wsg-", dir="/tmp"))
    sock = str(directory / "ctl.sock")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WSGATE_DAEMON_CONTROL_SOCKET": sock,
        "WSGATE_DAEMON_STATE_DIR": str(directory / "state"),
        "WSGATE_SOCKET": sock,
    }
    log = (directory / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [
            *WSGATE,
            "run",
            "--demo",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-listen",
            "",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def up() -> bool:
        assert proc.poll() is None, (directory / "daemon.log").read_text()
        r = subprocess.run(
            [*WSGATE, "status", "--json"], capture_output=True, text=True, env=env, timeout=20
        )
        return r.returncode == 0 and json.loads(r.stdout)["sessions"] > 0

    try:
        wait_until(up, 60, "demo daemon with its bots")
        yield env
    finally:
        stop_daemon(proc)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    r = subprocess.run(
        [*WSGATE, *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "80"},
        timeout=30,
        check=False,
    )
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def test_status_piped_is_never_truncated_and_shows_the_simulators(demo: dict[str, str]) -> None:
    out = cli(demo, "status")
    assert "…" not in out
    assert "bitfinex_auth" in out and "│ bitfinex " in out
    assert "simulators" in out and "ws://127.0.0.1:" in out
    doc = json.loads(cli(demo, "status", "--json"))
    from wsgate import __version__

    assert doc["version"] == __version__
    assert set(doc["simulators"]) >= {"bitfinex", "binance"}
    assert "…" not in cli(demo, "connections")


def test_sim_commands_find_the_demo_simulator_without_flags(demo: dict[str, str]) -> None:
    table = cli(demo, "sim", "fault", "bad_checksum")
    assert "bad_checksum" in table
    stats = json.loads(cli(demo, "sim", "stats", "--json"))
    assert stats["faults"]["counts"]["bad_checksum"] == 1
    assert stats["handshakes_accepted"] >= 1
    table = cli(demo, "sim", "stats")
    assert "handshakes_accepted" in table and "┃" in table
    binance = json.loads(cli(demo, "sim", "stats", "--exchange", "binance", "--json"))
    assert binance["url"] != stats["url"]
    cli(demo, "sim", "fault", "clear")


def test_read_commands_render_tables_and_take_json(demo: dict[str, str]) -> None:
    routes = cli(demo, "routes")
    assert "┃ route" in routes and "bitfinex_auth" in routes
    assert isinstance(json.loads(cli(demo, "routes", "--json")), list)
    tested = cli(demo, "alerts", "test", "--channel", "log")
    assert "receiver status" in tested and "accepted" in tested
    assert json.loads(cli(demo, "alerts", "test", "--channel", "log", "--json"))["channel"] == "log"
    assert "┃ channel" in cli(demo, "alerts", "channels")
    shown = json.loads(cli(demo, "config", "show", "--json"))
    assert set(shown["config"]["routes"]) >= {"bitfinex", "binance"}
    assert {"key": "gateway.listen", "source": "--listen"} in shown["overrides"]


def test_config_show_of_the_running_daemon_is_valid_input(
    demo: dict[str, str], tmp_path: Path
) -> None:
    shown = tmp_path / "shown.toml"
    shown.write_text(cli(demo, "config", "show"))
    check = json.loads(cli(demo, "config", "check", str(shown), "--json"))
    assert check["ok"] is True and check["errors"] == []
    assert {r["name"] for r in check["routes"]} >= {"bitfinex", "bitfinex_auth", "binance"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[routes.x]\ndialect = 'nope'\n")
    r = json.loads(cli(demo, "config", "check", str(bad), "--json", code=1))
    assert r["ok"] is False and r["errors"][0]["path"].startswith("routes.x")


def test_config_check_defaults_to_wsgate_config_then_etc(
    demo: dict[str, str], tmp_path: Path
) -> None:
    good = Path(__file__).resolve().parents[2] / "etc" / "wsgate.toml"
    env = {**demo, "WSGATE_CONFIG": str(good)}
    assert str(good) in cli(env, "config", "check")
    env = {k: v for k, v in demo.items() if k != "WSGATE_CONFIG"}
    out = subprocess.run(
        [*WSGATE, "config", "check"], capture_output=True, text=True, env=env, timeout=30
    )
    if not Path("/etc/wsgate/wsgate.toml").exists():
        assert out.returncode == 1 and "/etc/wsgate/wsgate.toml" in out.stderr
        assert "Traceback" not in out.stderr


def _on_a_terminal(env: dict[str, str], *args: str) -> str:
    """Run the CLI with stdout on a pseudo-terminal 60 columns wide; return what it drew."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*WSGATE, *args],
            stdout=slave,
            stderr=subprocess.PIPE,
            env={**env, "COLUMNS": "60", "TERM": "xterm"},
        )
        os.close(slave)
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(30) == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_wide_never_truncates_on_a_narrow_terminal(demo: dict[str, str]) -> None:
    narrow = _on_a_terminal(demo, "routes")
    assert "…" in narrow  # a 60-column terminal cuts the URLs...
    wide = _on_a_terminal(demo, "routes", "--wide")
    assert "…" not in wide and "bitfinex_auth" in wide  # ...--wide shows them whole
