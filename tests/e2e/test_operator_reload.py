"""`wsgate reload` prints a real diff, `--dry-run` applies nothing, `--json` has a fixed shape;
run-time route overrides can be listed and reset. The real CLI against a real daemon."""

from __future__ import annotations

import json

from tests.e2e.harness import run_daemon

ROUTE = """
[routes.feed]
dialect = "raw"
type = "market_data"
strategy = "adaptive"
min_connections = 0
[[routes.feed.endpoints]]
url = "ws://127.0.0.1:9/a"
name = "a"
[[routes.feed.endpoints]]
url = "ws://127.0.0.1:9/b"
name = "b"
"""


def test_reload_diff_dry_run_and_json() -> None:
    with run_daemon(ROUTE) as d:
        r = d.cli("reload", "--json", "--socket", d.socket)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["changed"] == [] and doc["restart_required"] == []

        text = d.config.read_text()
        d.config.write_text(
            text.replace('strategy = "adaptive"', 'strategy = "least_connections"').replace(
                "shutdown_timeout = 3", 'shutdown_timeout = "4s"\nnode_id = "other"'
            )
        )
        dry = d.cli("reload", "--dry-run", "--socket", d.socket)
        assert dry.returncode == 0, dry.stderr
        assert "routes.feed.strategy: adaptive -> least_connections" in dry.stdout
        assert "nothing was applied" in dry.stdout
        assert d.status()["routes"][0]["strategy"] == "adaptive"
        assert d.status()["config_generation"] == 2  # the empty reload above counted

        r = d.cli("reload", "--socket", d.socket)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert "  routes.feed.strategy: adaptive -> least_connections" in lines
        assert "  daemon.shutdown_timeout: 3 -> 4" in lines
        restart = [ln for ln in lines if ln.startswith("  daemon.node_id:")]
        assert restart and "restart required" in restart[0]
        st = d.status()
        assert st["routes"][0]["strategy"] == "least_connections"
        assert st["node_id"] == "node-1"  # kept until a restart, everywhere
        human = d.cli("status", "--socket", d.socket).stdout
        assert "restart pending: daemon.node_id" in human

        again = json.loads(d.cli("reload", "--json", "--socket", d.socket).stdout)
        assert again["changed"] == [
            {"key": "daemon.node_id", "old": "node-1", "new": "other"}
        ]  # still differs from the file, still waiting for the restart
        assert again["restart_required"] == ["daemon.node_id"]


def test_route_overrides_list_and_reset() -> None:
    with run_daemon(ROUTE) as d:

        def cli(*args: str) -> str:
            r = d.cli(*args, "--socket", d.socket)
            assert r.returncode == 0, r.stderr
            return r.stdout

        assert "no run-time overrides" in cli("routes", "overrides")
        cli("routes", "strategy", "feed", "round_robin")
        cli("routes", "weight", "feed", "b", "5")
        rows = json.loads(cli("routes", "overrides", "--json"))["overrides"]
        assert {(o["kind"], o["endpoint"], o["value"], o["configured"]) for o in rows} == {
            ("strategy", None, "round_robin", "adaptive"),
            ("weight", "b", 5, 1),
        }
        table = cli("routes")
        assert "round_robin*" in table and "5*" in table
        cli("routes", "weight", "feed", "b", "--reset")
        cli("routes", "strategy", "feed", "--reset")
        assert json.loads(cli("routes", "overrides", "--json"))["overrides"] == []
        assert json.loads(cli("routes", "--json"))[0]["strategy"] == "adaptive"
        bad = d.cli("routes", "weight", "feed", "zz", "--reset", "--socket", d.socket)
        assert bad.returncode == 1 and "no endpoint 'zz'" in bad.stderr
        assert "Traceback" not in bad.stderr
