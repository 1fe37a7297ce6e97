"""The operator's first hour: every error is one line and an exit code, never a traceback.

Each case runs the real `wsgate` in a subprocess, as an operator would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import WSGATE, free_port, run_daemon, write_config

ENTRY = Path(sys.executable).with_name("wsgate")


def _wsgate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WSGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("wsgate: ")
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--config", "/nope.toml"),
        ("status", "--json", "--config", "/nope.toml"),
        ("connections", "--config", "/nope.toml"),
        ("top", "--config", "/nope.toml"),
        ("routes", "--config", "/nope.toml"),
    ],
)
def test_missing_config_file_is_one_line_naming_the_file(args: tuple[str, ...]) -> None:
    r = _wsgate(*args)
    line = _one_line_error(r)
    assert "/nope.toml" in line
    assert r.returncode == 1


def test_debug_shows_the_traceback() -> None:
    r = _wsgate("status", "--config", "/nope.toml", "--debug")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "/nope.toml" in r.stderr
    r = _wsgate("status", "--config", "/nope.toml", env={"WSGATE_DEBUG": "1"})
    assert "Traceback" in r.stderr


def test_no_daemon_exits_3_with_one_line(tmp_path: Path) -> None:
    r = _wsgate("status", "--socket", str(tmp_path / "none.sock"))
    assert "none.sock" in _one_line_error(r)
    assert r.returncode == 3


def test_version_flag() -> None:
    from wsgate import __version__

    r = _wsgate("--version")
    assert (r.returncode, r.stdout.strip()) == (0, f"wsgate {__version__}")


def test_port_in_use_fails_startup_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg, _ = write_config(
            tmp_path,
            '[routes.r]\ndialect = "raw"\ntype = "market_data"\nmin_connections = 0\n'
            '[[routes.r.endpoints]]\nurl = "ws://127.0.0.1:9"\n',
            port,
        )
        r = _wsgate("run", "--config", str(cfg), "--log-level", "warning")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "ExceptionGroup" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("wsgate: ")]
    assert len(errors) == 1, r.stderr
    assert f"127.0.0.1:{port}" in errors[0] and "gateway.listen" in errors[0]
    assert "--listen" in errors[0]  # says how to pick another


def test_listen_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    env_port, flag_port = free_port(), free_port()
    body = '[routes.r]\ndialect = "raw"\ntype = "market_data"\nmin_connections = 0\n'
    body += '[[routes.r.endpoints]]\nurl = "ws://127.0.0.1:9"\n'
    metrics = free_port()
    with run_daemon(
        body,
        extra_env={"WSGATE_GATEWAY_LISTEN": f"127.0.0.1:{env_port}"},
        args=("--metrics-listen", f"127.0.0.1:{metrics}"),
    ) as d:
        st = d.status()
        assert st["gateway"]["listen"].endswith(f":{env_port}")
        shown = d.cli("config", "show", "--socket", d.socket)
        assert f'listen = "127.0.0.1:{env_port}"' in shown.stdout
        assert "$WSGATE_GATEWAY_LISTEN" in shown.stdout
        assert "--metrics-listen" in shown.stdout
        with socket.create_connection(("127.0.0.1", metrics), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        # A reload re-reads the file with the same flags and environment: nothing moves.
        reloaded = d.cli("reload", "--json", "--socket", d.socket)
        assert reloaded.returncode == 0, reloaded.stderr
        assert json.loads(reloaded.stdout)["changed"] == []
    with run_daemon(
        body,
        extra_env={"WSGATE_GATEWAY_LISTEN": f"127.0.0.1:{env_port}"},
        args=("--listen", f"127.0.0.1:{flag_port}"),
    ) as d:
        assert d.status()["gateway"]["listen"].endswith(f":{flag_port}")


def test_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    cfg, _ = write_config(
        tmp_path,
        '[routes.r]\ndialect = "raw"\ntype = "market_data"\n'
        '[[routes.r.endpoints]]\nurl = "ws://127.0.0.1:9"\n',
        free_port(),
    )
    r = _wsgate(
        "config",
        "check",
        str(cfg),
        env={"WSGATE_GATEWAY_MAX_SESSIONS": "lots", "WSGATE_GATEWAY_LISTN": "x"},
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "$WSGATE_GATEWAY_MAX_SESSIONS" in r.stderr and "gateway.max_sessions" in r.stderr
    assert "$WSGATE_GATEWAY_LISTN" in r.stderr and "did you mean 'gateway.listen'" in r.stderr


@pytest.mark.skipif(not ENTRY.exists(), reason="the wsgate entry point script is not installed")
def test_shell_completion_is_typers_own() -> None:
    r = subprocess.run(
        [str(ENTRY)],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "_WSGATE_COMPLETE": "complete_bash",
            "COMP_WORDS": "wsgate sta",
            "COMP_CWORD": "1",
        },
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "status" in r.stdout.split()
    shown = subprocess.run(
        [str(ENTRY), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SHELL": "/bin/bash"},
        check=False,
    )
    assert "_WSGATE_COMPLETE" in shown.stdout


def test_demo_moves_off_a_busy_default_port_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wsgate.config import parse_config
    from wsgate.config.env import Override
    from wsgate.demo import DEMO_TOML
    from wsgate.main import _free_demo_ports

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = DEMO_TOML.replace("127.0.0.1:8765", f"127.0.0.1:{port}")
        moved = _free_demo_ports(parse_config(text, environ={}))
        assert moved.gateway.listen != f"127.0.0.1:{port}"
        err = capsys.readouterr().err
        assert f"127.0.0.1:{port} (gateway.listen) is in use" in err
        assert moved.gateway.listen in err and "--listen" in err
        # An address the operator chose is never moved: the bind error names it instead.
        chosen = Override("gateway.listen", f"127.0.0.1:{port}", "--listen")
        kept = _free_demo_ports(parse_config(text, environ={}, overrides=[chosen]))
        assert kept.gateway.listen == f"127.0.0.1:{port}"


def test_debug_also_on_the_fast_json_path() -> None:
    r = _wsgate("status", "--json", "--config", "/nope.toml", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr
