"""The cluster against a real NATS server with real daemons as subprocesses.

Short intervals (heartbeat 0.5 s, node_down_after 2 s) keep the scenarios quick; every wait
is a bounded condition. Pages are counted at a real HTTP receiver that each node's
webhook channel posts to (only ``cluster_node_down`` is routed there).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.rig import NatsServer, Nodes, cluster_body, cluster_nodes, states
from tests.e2e.alert_rig import LoopThread, webhook_alerts
from tests.e2e.harness import DaemonProc, wait_until
from tests.runtime.receivers import WebhookReceiver

DOWN_AFTER = 2.0


@pytest.fixture
def receiver() -> Iterator[tuple[LoopThread, WebhookReceiver]]:
    with LoopThread() as lt:
        rx = lt.run(WebhookReceiver().start())
        try:
            yield lt, rx
        finally:
            lt.run(rx.stop())


def pages(rx: WebhookReceiver, peer: str, status: str = "firing") -> int:
    """Notifications about ``peer`` in ``status`` (each notification = one page)."""
    return sum(
        1
        for p in webhook_alerts(rx.unique, "cluster_node_down", status)
        if any(a["labels"].get("peer") == peer for a in p["alerts"])
    )


def head(d: DaemonProc) -> dict[str, Any]:
    r = d.cli("cluster", "nodes", "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def claims_decided(*nodes: DaemonProc) -> int:
    return sum(head(d)["claims"]["won"] + head(d)["claims"]["lost"] for d in nodes)


def alerts(d: DaemonProc) -> list[dict[str, Any]]:
    r = d.cli("alerts", "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout)["alerts"])


def node_down_alert(d: DaemonProc, peer: str) -> dict[str, Any] | None:
    for a in alerts(d):
        if a["alertname"] == "cluster_node_down" and a["labels"].get("peer") == peer:
            return a
    return None


def all_see(nodes: list[DaemonProc], ids: list[str], state: str = "up") -> bool:
    return all(all(states(d).get(i) == state for i in ids) for d in nodes)


def test_join_status_and_graceful_leave(receiver: tuple[LoopThread, WebhookReceiver]) -> None:
    _, rx = receiver
    with NatsServer() as nats, Nodes() as nodes:
        a = nodes.start("a", cluster_body("a", nats.url, hook_url=rx.url))
        b = nodes.start("b", cluster_body("b", nats.url, hook_url=rx.url))
        wait_until(lambda: all_see([a, b], ["a", "b"]), 15, "a and b to see each other up")
        row = cluster_nodes(a)["b"]
        assert {
            "node_id",
            "state",
            "last_seen",
            "health",
            "sessions",
            "upstreams",
            "version",
        } <= set(row)
        assert row["sessions"] == 0 and row["version"] and abs(time.time() - row["last_seen"]) < 5
        assert head(a)["link_up"] is True and head(a)["identity"] == "held"
        brief = a.status()["cluster"]
        assert brief["engine"] == "nats" and brief["link_up"] and brief["nodes"]["up"] == 2
        r = a.cli("status", "--socket", a.socket)
        assert r.returncode == 0 and "cluster t (nats): linked, nodes up 2" in r.stdout
        # status --cluster: both nodes side by side, asked through NATS.
        r = a.cli("status", "--cluster", "--json", "--socket", a.socket)
        assert r.returncode == 0, r.stderr
        rows = {n["node_id"]: n for n in json.loads(r.stdout)["nodes"]}
        assert rows["b"]["answered"] and rows["b"]["status"]["node_id"] == "b"
        assert rows["a"]["status"]["gateway"]
        # Graceful stop: "left", never a page.
        nodes.stop(b)
        wait_until(lambda: states(a).get("b") == "left", 10, "b to be left")
        deadline = time.monotonic() + DOWN_AFTER + 1.5  # longer than node_down_after
        while time.monotonic() < deadline:
            assert states(a)["b"] == "left"
            time.sleep(0.2)
        assert node_down_alert(a, "b") is None and pages(rx, "b") == 0
        r = a.cli("status", "--cluster", "--json", "--socket", a.socket)
        rows = {n["node_id"]: n for n in json.loads(r.stdout)["nodes"]}
        assert rows["b"]["answered"] is False and rows["b"]["state"] == "left"


def test_stop_kill_and_return_page_once_each(
    receiver: tuple[LoopThread, WebhookReceiver],
) -> None:
    _, rx = receiver
    with NatsServer() as nats, Nodes() as nodes:
        body = {n: cluster_body(n, nats.url, hook_url=rx.url) for n in "abc"}
        a, b, c = (nodes.start(n, body[n]) for n in "abc")
        wait_until(lambda: all_see([a, b, c], ["a", "b", "c"]), 20, "three nodes up")

        # SIGSTOP: c hangs. Survivors page once; when it thaws, one resolved page and c,
        # whose own view went stale while frozen, pages nobody.
        c.signal(signal.SIGSTOP)
        wait_until(lambda: pages(rx, "c") >= 1, DOWN_AFTER + 5, "one page for c")
        wait_until(lambda: claims_decided(a, b) >= 2, 10, "both survivors to decide")
        assert pages(rx, "c") == 1
        c.signal(signal.SIGCONT)
        wait_until(lambda: pages(rx, "c", "resolved") >= 1, 15, "resolved page for c")
        wait_until(lambda: claims_decided(a, b) >= 4, 10, "both survivors to decide resolved")
        wait_until(lambda: all_see([c], ["a", "b"]), 10, "c to see a and b up")
        assert node_down_alert(c, "a") is None and node_down_alert(c, "b") is None
        assert pages(rx, "c") == 1 and pages(rx, "c", "resolved") == 1
        assert pages(rx, "a") == 0 and pages(rx, "b") == 0

        # kill -9: exactly one page within node_down_after + 5 s, from one survivor.
        killed_at = time.monotonic()
        c.proc.kill()
        c.proc.wait(5)
        wait_until(lambda: pages(rx, "c") >= 2, DOWN_AFTER + 5, "one page for the killed c")
        assert time.monotonic() - killed_at <= DOWN_AFTER + 5
        wait_until(lambda: claims_decided(a, b) >= 6, 10, "both survivors to decide")
        assert pages(rx, "c") == 2  # one per firing: the freeze, then the kill
        lost = head(a)["claims"]["lost"] + head(b)["claims"]["lost"]
        assert lost == 3  # every notification was claimed once and skipped once

        # A survivor restarts while c is still dead: it finds c's last heartbeat in the
        # bucket (old news: its restored alert holds) and, once c stays silent, no page.
        nodes.stop(b)
        b = nodes.start_in(b.dir, "b", body["b"])
        wait_until(lambda: states(b).get("c") == "down", DOWN_AFTER + 8, "b to judge c down")
        assert node_down_alert(b, "c") is not None and pages(rx, "c") == 2

        # The same node comes back (same id, new process): one resolved page.
        decided_a = claims_decided(a)
        nodes.start_in(c.dir, "c", body["c"])
        wait_until(lambda: pages(rx, "c", "resolved") >= 2, 15, "resolved page after restart")
        wait_until(lambda: claims_decided(a) > decided_a and claims_decided(b) >= 1, 10, "claims")
        assert node_down_alert(a, "c") is None and node_down_alert(b, "c") is None
        assert pages(rx, "c", "resolved") == 2 and pages(rx, "c") == 2
        assert pages(rx, "a") == 0 and pages(rx, "b") == 0


def test_nats_down_at_start_and_restart_mid_run_page_nothing(
    receiver: tuple[LoopThread, WebhookReceiver],
) -> None:
    _, rx = receiver
    nats = NatsServer()  # not running yet: the nodes must start anyway
    with Nodes() as nodes:
        try:
            a = nodes.start("a", cluster_body("a", nats.url, hook_url=rx.url))
            b = nodes.start("b", cluster_body("b", nats.url, hook_url=rx.url))
            assert head(a)["link_up"] is False  # degraded, serving
            wait_until(
                lambda: any(a_["labels"].get("check") == "cluster_engine" for a_ in alerts(a)),
                DOWN_AFTER + 8,
                "the system alert about the unreachable engine",
            )
            nats.start()
            wait_until(lambda: all_see([a, b], ["a", "b"]), 20, "a and b linked and up")
            r = a.cli(
                "alerts", "silence", "-m", "peer=zz", "--for", "1h", "--comment", "t",
                "--socket", a.socket,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            # NATS restart longer than node_down_after: nobody pages anybody.
            nats.stop()
            wait_until(lambda: head(a)["link_up"] is False, 10, "a to notice the outage")
            time.sleep(DOWN_AFTER + 1)  # the outage itself is the scenario
            nats.start()
            wait_until(lambda: head(a)["link_up"] and head(b)["link_up"], 20, "both relinked")
            wait_until(lambda: all_see([a, b], ["a", "b"]), 10, "a and b up again")
            settle = time.monotonic() + DOWN_AFTER + 2
            while time.monotonic() < settle:  # no late verdicts after the return either
                assert all_see([a, b], ["a", "b"])
                time.sleep(0.2)
            assert pages(rx, "a") == 0 and pages(rx, "b") == 0
            # The silence survived the NATS restart (file storage): a new node gets it.
            c = nodes.start("c", cluster_body("c", nats.url, hook_url=rx.url))

            def c_has_silence() -> bool:
                r = c.cli("alerts", "silences", "--json", "--socket", c.socket)
                return any(
                    m["value"] == "zz"
                    for s in json.loads(r.stdout)["silences"]
                    for m in s["matchers"]
                )

            wait_until(c_has_silence, 10, "the silence on the new node")
        finally:
            for d in nodes.procs:
                nodes.stop(d)
            nats.stop()


def test_node_id_clash_is_refused_with_one_line() -> None:
    with NatsServer() as nats, Nodes() as nodes:
        nodes.start("a", cluster_body("a", nats.url))
        twin = nodes.start("a", cluster_body("a", nats.url), wait_ready=False)
        assert twin.proc.wait(20) == 1
        lines = [ln for ln in twin.logs().splitlines() if "held by a live node" in ln]
        assert len(lines) == 1 and "pid" in lines[0] and "gateway 127.0.0.1:" in lines[0]
        assert "ready:" not in twin.logs()


def test_silences_and_acks_hold_on_every_node(
    receiver: tuple[LoopThread, WebhookReceiver],
) -> None:
    _, rx = receiver
    with NatsServer() as nats, Nodes() as nodes:
        a, b, c = (nodes.start(n, cluster_body(n, nats.url, hook_url=rx.url)) for n in "abc")
        wait_until(lambda: all_see([a, b, c], ["a", "b", "c"]), 20, "three nodes up")
        # A silence made on a is honoured on b within 2 s.
        r = a.cli(
            "alerts", "silence", "-m", "peer=c", "--for", "10m", "--comment", "maintenance",
            "--json", "--socket", a.socket,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        sil_id = json.loads(r.stdout)["silence"]["id"]
        made = time.monotonic()

        def b_has() -> bool:
            r = b.cli("alerts", "silences", "--json", "--socket", b.socket)
            return sil_id in {s["id"] for s in json.loads(r.stdout)["silences"]}

        wait_until(b_has, 5, "the silence on b")
        assert time.monotonic() - made <= 2.0 + 1.0  # 2 s, plus one CLI round trip of slack
        c.proc.kill()
        wait_until(lambda: node_down_alert(a, "c") is not None, DOWN_AFTER + 5, "firing on a")
        wait_until(lambda: node_down_alert(b, "c") is not None, 5, "firing on b")
        wait_until(lambda: bool(node_down_alert(b, "c")["silenced"]), 3, "silenced on b")  # type: ignore[index]
        # An ack made on b applies on a within 2 s.
        alert = node_down_alert(b, "c")
        assert alert is not None and alert["fingerprint"] == node_down_alert(a, "c")["fingerprint"]  # type: ignore[index]
        r = b.cli("alerts", "ack", alert["fingerprint"], "--comment", "on it", "--socket", b.socket)
        assert r.returncode == 0, r.stderr
        acked = time.monotonic()
        wait_until(lambda: bool(node_down_alert(a, "c")["acknowledged"]), 5, "ack on a")  # type: ignore[index]
        assert time.monotonic() - acked <= 2.0 + 1.0
        assert pages(rx, "c") == 0  # silenced everywhere: no page at all
        # Restart a (a node restart): its local copy keeps the silence.
        nodes.stop(a)
        a2 = nodes.start_in(a.dir, "a", cluster_body("a", nats.url, hook_url=rx.url))
        r = a2.cli("alerts", "silences", "--json", "--socket", a2.socket)
        assert sil_id in {s["id"] for s in json.loads(r.stdout)["silences"]}


def test_clock_skew_between_nodes_does_not_matter(
    receiver: tuple[LoopThread, WebhookReceiver],
) -> None:
    """Two peers whose clocks run 7 s ahead and behind (their heartbeats say so) stay up;
    when one stops, it is down after node_down_after by our clock, paged once."""
    lt, rx = receiver
    with NatsServer() as nats, Nodes() as nodes:
        a = nodes.start("a", cluster_body("a", nats.url, hook_url=rx.url))
        wait_until(lambda: head(a)["link_up"], 10, "a linked")
        stop_slow = _skewed_peers(lt, nats.url)
        try:
            wait_until(lambda: all_see([a], ["fast", "slow"]), 10, "skewed peers up")
            deadline = time.monotonic() + DOWN_AFTER + 1
            while time.monotonic() < deadline:
                assert all_see([a], ["fast", "slow"])
                time.sleep(0.2)
            stop_slow["slow"] = True
            wait_until(lambda: pages(rx, "slow") >= 1, DOWN_AFTER + 5, "slow paged")
            assert states(a)["fast"] == "up" and pages(rx, "fast") == 0
        finally:
            stop_slow["all"] = True
            stop_slow["_future"].result(10)  # the fake peers' client is closed


def _skewed_peers(lt: LoopThread, url: str) -> dict[str, Any]:
    """Two fake peers written straight into the nodes bucket by a real NATS client."""
    import asyncio

    import nats

    flags: dict[str, Any] = {}

    async def run() -> None:
        nc = await nats.connect(url)
        kv = await nc.jetstream().key_value("t-nodes")
        revs: dict[str, int] = {}
        while not flags.get("all"):
            for node, skew in (("fast", 7.0), ("slow", -7.0)):
                if flags.get(node):
                    continue
                doc = {"instance": node, "state": "up", "sent_at": time.time() + skew}
                doc.update(version="x", heartbeat_interval=0.5, sessions=0, upstreams={})
                raw = json.dumps(doc).encode()
                revs[node] = await (
                    kv.update(node, raw, last=revs[node]) if node in revs else kv.put(node, raw)
                )
            await asyncio.sleep(0.5)
        await nc.close()

    done = asyncio.run_coroutine_threadsafe(run(), lt.loop)
    flags["_future"] = done
    return flags


def test_single_node_answers_the_cluster_commands_alone() -> None:
    body = """
[routes.r]
dialect = "raw"
type = "market_data"
min_connections = 0
[[routes.r.endpoints]]
url = "ws://127.0.0.1:9"
"""
    with Nodes() as nodes:
        d = nodes.start("solo", body)
        doc = head(d)
        assert doc["engine"] == "none" and doc["link_up"] is True
        assert [(n["node_id"], n["state"], n["self"]) for n in doc["nodes"]] == [
            ("solo", "up", True)
        ]
        r = d.cli("status", "--cluster", "--json", "--socket", d.socket)
        rows = json.loads(r.stdout)["nodes"]
        assert len(rows) == 1 and rows[0]["answered"] and rows[0]["status"]["node_id"] == "solo"
        assert d.status()["cluster"]["engine"] == "none"
