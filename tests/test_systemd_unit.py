from __future__ import annotations

import configparser
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "wsgate.service"
SYSUSERS = UNIT.with_name("wsgate.sysusers.conf")
SAMPLE = UNIT.parent.parent / "etc" / "wsgate.toml"
OPERATIONS = UNIT.parent.parent / "docs" / "OPERATIONS.md"

# On a build host the service user does not exist yet; that is all verify may say.
ALLOWED = re.compile(r"(user|group).*(not found|does not exist|failed to resolve)", re.I)


def _service() -> dict[str, list[str]]:
    """[Service] keys with every value (systemd allows repeated keys)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_has_the_required_settings() -> None:
    svc = _service()
    expected = {
        "Type": "notify",
        "ExecStart": "/usr/bin/wsgate run --config /etc/wsgate/wsgate.toml",
        "ExecReload": "/usr/bin/wsgate reload --wait",
        "NotifyAccess": "main",
        "WatchdogSec": "30s",
        "Restart": "on-failure",
        "RestartSec": "2s",
        "TimeoutStartSec": "30s",
        "TimeoutStopSec": "20s",
        "User": "wsgate",
        "Group": "wsgate",
        "RuntimeDirectory": "wsgate",
        "RuntimeDirectoryMode": "0750",
        "StateDirectory": "wsgate",
        "StateDirectoryMode": "0750",
        "ConfigurationDirectory": "wsgate",
        "UMask": "0027",
        "LimitNOFILE": "65536",
    }
    assert {k: svc.get(k, [None])[-1] for k in expected} == expected


def test_unit_has_the_hardening_set() -> None:
    svc = _service()
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert svc.get(key) == ["yes"], key
    assert svc["ProtectSystem"] == ["strict"]
    assert svc["SystemCallArchitectures"] == ["native"]
    assert svc["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert svc["CapabilityBoundingSet"] == [""]


def test_sysusers_declares_the_service_account() -> None:
    lines = [
        ln for ln in SYSUSERS.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines == ['u wsgate - "wsgate daemon" /var/lib/wsgate', "g wsgate-admin -"]


def test_sysusers_creates_every_group_the_sample_config_names(tmp_path: Path) -> None:
    from wsgate.config import load_config

    cfg = load_config(SAMPLE, environ={})
    wanted = {cfg.daemon.control_group, cfg.daemon.admin_group} - {None}
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    proc = subprocess.run(
        [tool, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    groups = {ln.split(":")[0] for ln in (tmp_path / "etc" / "group").read_text().splitlines()}
    users = {ln.split(":")[0] for ln in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    assert wanted <= groups and "wsgate" in users


def _install_steps() -> str:
    doc = OPERATIONS.read_text()
    section = doc.split("## Install", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_documented_install_creates_what_the_unit_points_at() -> None:
    steps = _install_steps()
    svc = _service()
    for key in ("ExecStart", "ExecReload"):
        binary = svc[key][-1].split()[0]
        assert binary == "/usr/bin/wsgate"
        assert f"ln -sf /opt/wsgate/bin/wsgate {binary}" in steps
    assert "python3 -m venv /opt/wsgate" in steps and "-c constraints.txt" in steps
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(UNIT.read_text())
    doc = parser.get("Unit", "Documentation")
    assert doc.startswith("file:/usr/share/doc/wsgate/")
    installed = Path(doc.removeprefix("file:"))
    assert f"-t {installed.parent}" in steps and f"docs/{installed.name}" in steps
    assert (UNIT.parent.parent / "docs" / installed.name).exists()
    assert "/usr/lib/sysusers.d/wsgate.conf" in steps and "systemd-sysusers" in steps


def test_unit_parses_as_ini() -> None:
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser.get("Install", "WantedBy") == "multi-user.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that Exec* binaries exist; point them at a stand-in script.
    fake = tmp_path / "wsgate"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    unit = tmp_path / "wsgate.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/wsgate", str(fake)))
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and not ALLOWED.search(line)
    ]
    assert problems == []
    assert proc.returncode == 0, proc.stderr
