"""Alert drills: the real daemon, the simulator's faults and real receivers on loopback.

Every alert type is raised by driving the simulator or the daemon into the condition; no
test calls the alert engine. Intervals are 1 s (check), 0.5 s (group_wait).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from tests.e2e.alert_rig import (
    ANOMALY_RULES,
    FAST_RULES,
    SECRET,
    TICKER,
    LoopThread,
    alert_body,
    bfx_drill,
    bfx_route,
    cli_json,
    new_dir,
    perf_warmup,
    spawn_daemon,
    wait_for_alert,
    wait_pool_up,
    wait_runs,
    webhook_alerts,
)
from tests.e2e.harness import DaemonProc, wait_until
from tests.runtime.receivers import HttpReceiver, Reply, SmtpReceiver, WebhookReceiver


def _active(d: DaemonProc, alertname: str) -> list[dict[str, Any]]:
    return [a for a in cli_json(d, "alerts")["alerts"] if a["labels"]["alertname"] == alertname]


def test_connection_failure_webhook_hmac_history_and_channels() -> None:
    with LoopThread() as lt:
        sim = lt.start_sim()
        rx = lt.run(WebhookReceiver(secret=SECRET).start())
        body = alert_body(rx.url, matchers={"alertname": "connection_failure"}) + bfx_route(
            "bfx", sim.bitfinex_url
        )
        with spawn_daemon(new_dir(), body) as d:
            wait_pool_up(d)
            faults = sim.bitfinex.faults
            lt.call(lambda: faults.reject_handshakes(503, 10_000))
            lt.call(lambda: faults.drop())
            wait_for_alert(rx.unique, "connection_failure", 20)
            assert rx.bad_signatures == 0
            got = webhook_alerts(rx.unique, "connection_failure")[0]
            assert got["version"] == "4" and got["status"] == "firing"
            assert got["alerts"][0]["labels"]["route"] == "bfx"
            active = _active(d, "connection_failure")
            assert active and active[0]["state"] == "firing"
            assert set(active[0]) >= {
                "fingerprint",
                "labels",
                "severity",
                "state",
                "started_at",
                "value",
                "acknowledged",
                "silenced",
                "inhibited",
                "flapping",
                "summary",
            }
            hist = cli_json(d, "alerts", "history", "--since", "1h", "--type", "connection_failure")
            assert any(e["to"] == "firing" for e in hist["events"])
            chans = cli_json(d, "alerts", "channels")["channels"]
            hook = next(c for c in chans if c["name"] == "hook")
            assert hook["delivered"] >= 1 and hook["breaker"] == "closed"
            # Recovery resolves it, and the resolved notice arrives too.
            lt.call(lambda: faults.clear())
            wait_for_alert(rx.unique, "connection_failure", 30, status="resolved")
        lt.stop(rx)
        lt.stop(sim)


def _fail_upstream(lt: LoopThread, sim: Any) -> None:
    faults = sim.bitfinex.faults
    lt.call(lambda: faults.reject_handshakes(503, 10_000))
    lt.call(lambda: faults.drop())


def test_kill9_before_delivery_then_restart_delivers_once_and_ack_silence_survive() -> None:
    with LoopThread() as lt:
        sim = lt.start_sim()
        # The receiver answers 503 until the daemon is dead: the notification is raised,
        # persisted, attempted, and not delivered when the daemon is killed.
        rx = lt.run(WebhookReceiver(secret=SECRET, script=[Reply(503)] * 10_000).start())
        body = alert_body(rx.url, matchers={"alertname": "connection_failure"}, group_interval=300)
        body += bfx_route("bfx", sim.bitfinex_url)
        state = new_dir()
        with spawn_daemon(state, body) as d:
            wait_pool_up(d)
            _fail_upstream(lt, sim)
            wait_until(lambda: len(rx.requests) >= 1, 20, "a first (refused) delivery attempt")
            delivery_id = rx.requests[0].headers["x-wsgate-delivery"]
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)
        assert rx.unique == {}
        lt.call(lambda: rx.script.clear())  # the receiver is healthy again
        with spawn_daemon(state, body, port=d.port) as d2:
            wait_until(lambda: delivery_id in rx.unique, 20, "replayed delivery")
            assert rx.duplicates == 0 and rx.bad_signatures == 0
            assert "undelivered notification(s) from a previous run" in d2.logs()
            fp = _active(d2, "connection_failure")[0]["fingerprint"]
            # Ack and silence round trips through the CLI.
            ack = cli_json(d2, "alerts", "ack", fp, "--comment", "on it")
            assert ack["ack"]["fingerprint"] == fp and "uid" in ack["ack"]["by"]
            sil = cli_json(
                d2,
                "alerts",
                "silence",
                "--match",
                "route=bfx",
                "--match",
                "alertname=~conn.*",
                "--for",
                "2h",
                "--comment",
                "exchange maintenance",
            )["silence"]
            wait_until(
                lambda: _active(d2, "connection_failure")[0]["silenced"], 10, "silenced flag"
            )
            row = _active(d2, "connection_failure")[0]
            assert row["acknowledged"] is True
            # A silence without a comment is a usage error; an unknown fingerprint is not found.
            r = d2.cli("alerts", "silence", "--match", "a=b", "--for", "1h", "--socket", d2.socket)
            assert r.returncode == 2
            r = d2.cli("alerts", "ack", "0000", "--socket", d2.socket)
            assert r.returncode == 1 and "no pending or firing alert" in r.stderr
        # Graceful restart: the silence and the ack are still there.
        with spawn_daemon(state, body, port=d.port) as d3:
            sils = cli_json(d3, "alerts", "silences")["silences"]
            assert [s["id"] for s in sils] == [sil["id"]]
            assert sils[0]["comment"] == "exchange maintenance"
            row = _active(d3, "connection_failure")[0]
            assert row["fingerprint"] == fp and row["acknowledged"] and row["silenced"]
            cli_json(d3, "alerts", "unsilence", sil["id"])
            assert cli_json(d3, "alerts", "silences")["silences"] == []
            hist = cli_json(d3, "alerts", "history", "--since", "1h")["events"]
            kinds = {e["kind"] for e in hist}
            assert {"alert_ack", "silence_created", "silence_expired"} <= kinds
        assert rx.duplicates == 0
        lt.stop(rx)
        lt.stop(sim)


def _http_channel(name: str, kind: str, url: str) -> str:
    return f"""
[alerts.channels.{name}]
kind = "{kind}"
enabled = true
url = "{url}"
min_severity = "info"
timeout = 3
"""


def test_slack_discord_email_formats_429_retry_and_404_disables_channel() -> None:
    with LoopThread() as lt:
        sim = lt.start_sim()
        hook = lt.run(WebhookReceiver(secret=SECRET).start())
        slack = lt.run(HttpReceiver().start())
        discord = lt.run(
            HttpReceiver(
                [Reply(429, json={"message": "You are being rate limited.", "retry_after": 0.3})],
                default=Reply(204),
            ).start()
        )
        gone = lt.run(HttpReceiver(default=Reply(404, json={"code": 10015})).start())
        smtp = SmtpReceiver()
        lt.run(smtp.__aenter__())
        channels = (
            _http_channel("slack", "slack", slack.url)
            + _http_channel("discord", "discord", discord.url)
            + _http_channel("discord_gone", "discord", gone.url)
            + f"""
[alerts.channels.email]
kind = "email"
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {smtp.port}
security = "none"
from_addr = "wsgate@example.test"
to_addrs = ["ops@example.test"]
min_severity = "info"
"""
        )
        body = alert_body(hook.url, extra_channels=channels) + bfx_route("bfx", sim.bitfinex_url)
        with spawn_daemon(new_dir(), body) as d:
            wait_pool_up(d)
            _fail_upstream(lt, sim)
            wait_for_alert(hook.unique, "connection_failure", 20)
            # Slack: one attachment coloured by severity.
            wait_until(lambda: len(slack.requests) >= 1, 15, "slack delivery")
            sl = slack.requests[0].json()
            assert "connection_failure" in sl["text"] and sl["attachments"][0]["color"]
            # Discord: 429 with retry_after, then the retry is accepted; embeds within limits.
            wait_until(lambda: len(discord.requests) >= 2, 15, "discord retry after 429")
            first, second = discord.requests[0], discord.requests[1]
            assert first.body == second.body and "wait=true" in second.path
            embed = second.json()["embeds"][0]
            assert embed["color"] and len(second.json()["content"]) <= 2000
            # Discord 404: the channel is disabled and the other channels hear about it.
            wait_until(
                lambda: any(
                    a["labels"].get("channel") == "discord_gone"
                    for p in hook.unique.values()
                    for a in p["alerts"]
                ),
                20,
                "channel-disabled alert on the webhook",
            )
            chans = {c["name"]: c for c in cli_json(d, "alerts", "channels")["channels"]}
            assert (
                chans["discord_gone"]["disabled"] and "404" in chans["discord_gone"]["last_error"]
            )
            assert chans["discord"]["delivered"] >= 1 and not chans["discord"]["disabled"]
            assert len(gone.requests) == 1  # never used again after the 404
            # Email through aiosmtpd.
            wait_until(lambda: len(smtp.messages) >= 1, 15, "email delivery")
            mail = smtp.messages[0]
            assert mail.rcpt_tos == ("ops@example.test",)
            assert "connection_failure" in str(mail.message["Subject"])
            # `alerts test` sends a real notification and reports the receiver's answer.
            res = cli_json(d, "alerts", "test", "--channel", "slack")
            assert res["ok"] and res["status"] == 200
            assert slack.requests[-1].json()["text"].startswith("[TEST]")
            r = d.cli("alerts", "test", "--channel", "discord_gone", "--socket", d.socket)
            assert r.returncode == 1 and "404" in r.stderr
            r = d.cli("alerts", "test", "--channel", "nope", "--socket", d.socket)
            assert r.returncode == 1 and "no enabled alert channel" in r.stderr
        lt.run(smtp.__aexit__(None, None, None))
        for server in (hook, slack, discord, gone, sim):
            lt.stop(server)


# ---------------------------------------------------------------- every alert type, by fault


def test_latency_fault_pages_high_latency_with_degradation_and_health_as_consequences() -> None:
    with bfx_drill(FAST_RULES + perf_warmup(3)) as (lt, sim, rx, d):
        bot = lt.bot(d.port, "bfx", [TICKER])
        wait_runs(d, 16)  # a full rate window, then the baselines' warm-up
        lt.call(lambda: sim.bitfinex.faults.latency(3000))
        wait_for_alert(rx.unique, "high_latency", 30)

        # Slower throughput and a lower health score follow from the latency: they are
        # consequences, muted, and listed inside the high_latency page's alert.
        def consequences() -> set[str]:
            return {a["alertname"] for a in cli_json(d, "alerts")["alerts"] if a["inhibited"]}

        wait_until(
            lambda: {"performance_degradation", "system_health"} & consequences(),
            30,
            "a consequence of the latency",
        )
        wait_runs(d, 5)
        paged = {a["labels"]["alertname"] for n in rx.unique.values() for a in n["alerts"]}
        assert paged == {"high_latency"}
        lt.close_bot(bot)


def test_malformed_frames_raise_high_error_rate() -> None:
    with bfx_drill() as (lt, sim, rx, _):
        lt.call(lambda: sim.bitfinex.faults.malformed(40))
        wait_for_alert(rx.unique, "high_error_rate", 30)


def test_repeated_drops_raise_frequent_reconnects() -> None:
    # A drop here is back within a second, but a loaded box can stretch one reconnect
    # past connection_failure's 1 s, and then the reconnects are its consequence (and
    # held, see causes.py): give the outage rule room so the drill tests the flapping.
    rules = FAST_RULES + "[alerts.rules.connection_failure]\nfire = 5\n"
    with bfx_drill(rules) as (lt, sim, rx, d):
        for _ in range(4):
            before = sim.bitfinex.statistics().as_dict()
            lt.call(lambda: sim.bitfinex.faults.drop())
            wait_until(
                lambda b=before: (
                    sim.bitfinex.statistics().as_dict() != b  # type: ignore[misc]
                    and d.status()["routes"][0]["connections"]["up"] >= 1
                ),
                15,
                "reconnected",
            )
            time.sleep(0.6)  # past min_uptime, so each drop counts as a new reconnect
        wait_for_alert(rx.unique, "frequent_reconnects", 30)


def test_channel_limit_and_small_limits_page_capacity_with_no_candidate_inside() -> None:
    """Full connections are the cause, "no eligible connection" the symptom: one page,
    capacity_warning, with the load-balancer issue listed as also affected."""
    limits = {"max_connections": 1, "max_subscriptions_per_connection": 1, "max_sessions": 2}
    with bfx_drill(**limits) as (lt, sim, rx, d):
        lt.call(lambda: sim.bitfinex.faults.channel_limit(1))
        eth = {**TICKER, "symbol": "tETHUSD"}
        bots = [lt.bot(d.port, "bfx", [TICKER]), lt.bot(d.port, "bfx", [eth])]
        wait_for_alert(rx.unique, "capacity_warning", 30)

        def no_candidate_muted() -> bool:
            return any(
                a["alertname"] == "load_balancer_issue"
                and a["labels"]["issue"] == "no_candidate"
                and a["inhibited"]
                for a in cli_json(d, "alerts")["alerts"]
            )

        wait_until(no_candidate_muted, 30, "no_candidate as a consequence of capacity")
        assert webhook_alerts(rx.unique, "load_balancer_issue") == []
        resources = {
            a["labels"].get("resource")
            for p in webhook_alerts(rx.unique, "capacity_warning")
            for a in p["alerts"]
        }
        assert "route_sessions" in resources
        for b in bots:
            lt.close_bot(b)


def test_rate_step_raises_anomaly_detected() -> None:
    with bfx_drill(FAST_RULES + ANOMALY_RULES) as (lt, _, rx, d):
        bot = lt.bot(d.port, "bfx", [TICKER])
        wait_runs(d, 15)  # warm-up, and the 10 s rate window settles
        more = [
            {"event": "subscribe", "channel": ch, "symbol": sym, **extra}
            for sym in ("tBTCUSD", "tETHUSD")
            for ch, extra in (("trades", {}), ("book", {"prec": "P0", "len": "25"}))
        ]
        loud = lt.bot(d.port, "bfx", more)
        wait_for_alert(rx.unique, "anomaly_detected", 30)
        got = webhook_alerts(rx.unique, "anomaly_detected")[0]["alerts"]
        assert any(a["labels"].get("metric") == "rate" for a in got)
        lt.close_bot(loud)
        lt.close_bot(bot)


def test_frozen_daemon_raises_system_health() -> None:
    """One node: a frozen process (SIGSTOP, as a VM pause) misses every job's runs.

    That is the node's own health (system_health, check=job); cluster_node_down is about
    peers and is covered by the cluster tests."""
    # Missed runs are seen once, at the first evaluation after the resume.
    rules = "[alerts.rules.system_health]\npending_samples = 1\nwindow = 1\n"
    with bfx_drill(rules) as (_, _, rx, d):
        wait_runs(d, 2)
        d.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(6)  # the fault itself: the node is frozen for 6 intervals
        finally:
            d.proc.send_signal(signal.SIGCONT)

        # The freeze starves the event loop and every job misses runs: one system_health
        # page for the root (the loop's lag, when it shows), the missed runs in it.
        def job_news() -> bool:
            for n in webhook_alerts(rx.unique, "system_health"):
                for a in n["alerts"]:
                    if a["labels"].get("check") == "job":
                        return True
                    if "scheduled job" in a["annotations"].get("also_affected", "") or (
                        "missed" in a["annotations"].get("also_affected", "")
                    ):
                        return True
            return False

        wait_until(job_news, 30, "a system_health notification for missed job runs")
        assert {a["labels"]["alertname"] for n in rx.unique.values() for a in n["alerts"]} == {
            "system_health"
        }
