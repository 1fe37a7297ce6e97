"""Every channel end to end against real loopback receivers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from receivers import (
    FakeChannel,
    HttpReceiver,
    Reply,
    SmtpReceiver,
    WebhookReceiver,
    alert_payload,
)
from rich.console import Console

from wsgate.errors import DeliveryError
from wsgate.runtime.ops.notifiers import (
    ChannelGone,
    ConsoleNotifier,
    DiscordNotifier,
    EmailNotifier,
    LogNotifier,
    SlackNotifier,
    WebhookNotifier,
    build_notifier,
    channel_wants,
)
from wsgate.runtime.ops.notifiers.base import notification_title, redact_url, truncate
from wsgate.runtime.ops.notifiers.discord import LIMITS, embed_size, render_discord
from wsgate.runtime.ops.notifiers.email import smtp_kwargs
from wsgate.runtime.ops.notifiers.webhook import sign

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


# -- helpers -----------------------------------------------------------------------------------


def test_title_matches_am_style() -> None:
    assert notification_title(alert_payload()) == "[FIRING:2] high_latency route=bitfinex"
    resolved = alert_payload(status="resolved", n_alerts=1)
    assert notification_title(resolved) == "[RESOLVED:1] high_latency route=bitfinex"


def test_truncate_marks_the_cut() -> None:
    assert truncate("abcdef", 4) == "abc…"
    assert len(truncate("x" * 5000, 256)) == 256
    assert truncate("abc", 3) == "abc"


def test_redact_url_hides_the_token() -> None:
    url = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN"
    assert redact_url(url) == "https://hooks.slack.com/…"


def test_github_signature_test_vector() -> None:
    # alerting.md §3.3, reproduced from GitHub's docs.
    sig = sign("It's a Secret to Everybody", b"Hello, World!")
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_channel_filters() -> None:
    cfg = FakeChannel(min_severity="critical", send_resolved=False)
    assert channel_wants(cfg, alert_payload(severity="critical"))
    assert not channel_wants(cfg, alert_payload(severity="warning"))
    assert not channel_wants(cfg, alert_payload(status="resolved"))
    assert not channel_wants(FakeChannel(enabled=False), alert_payload())


def test_build_notifier_kinds() -> None:
    kinds = {"webhook", "slack", "discord", "email", "log", "console"}
    for kind in kinds:
        notifier = build_notifier(FakeChannel(name=kind, kind=kind), demo=True)
        assert notifier.kind == kind
        assert repr(notifier) == f"<{type(notifier).__name__} {kind!r} kind={kind}>"
        run(notifier.aclose())
    with pytest.raises(ValueError, match="unknown 'pager'"):
        build_notifier(FakeChannel(kind="pager"), demo=False)


# -- webhook -----------------------------------------------------------------------------------


def test_webhook_posts_payload_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_TEST_SECRET", "s3cret")

    async def main() -> None:
        async with WebhookReceiver(secret="s3cret") as rx:
            cfg = FakeChannel(url=rx.url, secret_env="WSGATE_TEST_SECRET")
            notifier = WebhookNotifier(cfg)
            payload = alert_payload("n-42")
            result = await notifier.send(payload)
            await notifier.aclose()
            assert result.status == 204
            assert result.notification_id == "n-42"
            (req,) = await rx.wait_for_requests(1)
            assert req.method == "POST"
            assert req.path == "/hook/secret-token"
            assert req.headers["content-type"] == "application/json"
            assert req.headers["x-wsgate-delivery"] == "n-42"
            want = hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
            assert req.headers["x-wsgate-signature-256"] == f"sha256={want}"
            assert req.json() == payload
            assert rx.unique == {"n-42": payload}

    run(main())


def test_webhook_secret_from_file_and_bad_signature_is_permanent(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("wrong-secret\n")

    async def main() -> None:
        async with WebhookReceiver(secret="right-secret") as rx:
            notifier = WebhookNotifier(FakeChannel(url=rx.url, secret_file=str(secret)))
            with pytest.raises(DeliveryError) as err:
                await notifier.send(alert_payload())
            await notifier.aclose()
            assert err.value.retryable is False
            assert "HTTP 401" in str(err.value)
            assert "secret-token" not in str(err.value)  # URL path is never shown
            assert rx.bad_signatures == 1

    run(main())


def test_webhook_5xx_is_retryable_with_retry_after() -> None:
    async def main() -> None:
        script = [Reply(503, headers={"Retry-After": "7"}), Reply(500)]
        async with HttpReceiver(script) as rx:
            notifier = WebhookNotifier(FakeChannel(url=rx.url))
            with pytest.raises(DeliveryError) as first:
                await notifier.send(alert_payload())
            with pytest.raises(DeliveryError) as second:
                await notifier.send(alert_payload())
            await notifier.aclose()
        assert (first.value.retryable, first.value.retry_after) == (True, 7.0)
        assert (second.value.retryable, second.value.retry_after) == (True, None)

    run(main())


def test_webhook_unreachable_is_retryable() -> None:
    async def main() -> None:
        rx = await HttpReceiver().start()
        url = rx.url
        await rx.stop()
        notifier = WebhookNotifier(FakeChannel(url=url))
        with pytest.raises(DeliveryError) as err:
            await notifier.send(alert_payload())
        await notifier.aclose()
        assert err.value.retryable is True

    run(main())


def test_webhook_url_from_env_missing_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSGATE_NO_SUCH_URL", raising=False)
    notifier = WebhookNotifier(FakeChannel(url_env="WSGATE_NO_SUCH_URL"))
    with pytest.raises(DeliveryError, match="no url") as err:
        run(notifier.send(alert_payload()))
    assert err.value.retryable is False


# -- slack -------------------------------------------------------------------------------------


def test_slack_colours_and_fallback() -> None:
    async def main() -> None:
        async with HttpReceiver() as rx:
            notifier = SlackNotifier(FakeChannel(name="slack", kind="slack", url=rx.url))
            await notifier.send(alert_payload("a", severity="critical"))
            await notifier.send(alert_payload("b", severity="warning"))
            await notifier.send(alert_payload("c", severity="info"))
            await notifier.send(alert_payload("d", status="resolved"))
            await notifier.aclose()
            reqs = await rx.wait_for_requests(4)
        bodies = [r.json() for r in reqs]
        colours = [b["attachments"][0]["color"] for b in bodies]
        assert colours == ["#d00000", "#daa038", "#2eb886", "#2eb886"]
        assert bodies[0]["text"] == "[FIRING:2] high_latency route=bitfinex (critical)"
        att = bodies[0]["attachments"][0]
        assert att["title"] == "[FIRING:2] high_latency route=bitfinex"
        assert "p95 812ms > 500ms" in att["text"]
        assert {"title": "route", "value": "bitfinex", "short": True} in att["fields"]

    run(main())


def test_slack_truncates_long_text() -> None:
    async def main() -> None:
        async with HttpReceiver() as rx:
            notifier = SlackNotifier(FakeChannel(kind="slack", url=rx.url))
            await notifier.send(alert_payload(summary="x" * 10_000, n_alerts=3))
            await notifier.aclose()
            (req,) = await rx.wait_for_requests(1)
        att = req.json()["attachments"][0]
        assert len(att["text"]) == 3000
        assert att["text"].endswith("…")

    run(main())


def test_slack_429_retry_after_from_body() -> None:
    async def main() -> None:
        body = {"retry_after": 1, "ok": False, "error": "rate_limited"}
        async with HttpReceiver([Reply(429, json=body)]) as rx:
            notifier = SlackNotifier(FakeChannel(kind="slack", url=rx.url))
            with pytest.raises(DeliveryError) as err:
                await notifier.send(alert_payload())
            await notifier.aclose()
        assert err.value.retryable is True
        assert err.value.retry_after == 1.0

    run(main())


def test_slack_410_archived_channel_is_gone() -> None:
    async def main() -> None:
        async with HttpReceiver([Reply(410, body=b"channel_is_archived")]) as rx:
            notifier = SlackNotifier(FakeChannel(kind="slack", url=rx.url))
            with pytest.raises(ChannelGone) as err:
                await notifier.send(alert_payload())
            await notifier.aclose()
        assert err.value.disable_channel is True
        assert "channel_is_archived" in str(err.value)

    run(main())


# -- discord -----------------------------------------------------------------------------------


def test_discord_embed_and_wait_query() -> None:
    async def main() -> None:
        async with HttpReceiver(default=Reply(200, json={"id": "1"})) as rx:
            notifier = DiscordNotifier(FakeChannel(kind="discord", url=rx.url))
            await notifier.send(alert_payload(severity="warning"))
            await notifier.aclose()
            (req,) = await rx.wait_for_requests(1)
        assert req.path.endswith("?wait=true")
        body = req.json()
        embed = body["embeds"][0]
        assert embed["color"] == 0xDAA038
        assert embed["title"] == "[FIRING:2] high_latency route=bitfinex"
        assert len(embed["fields"]) == 2
        assert body["allowed_mentions"] == {"parse": []}

    run(main())


def test_discord_oversize_alert_fits_every_limit() -> None:
    payload = alert_payload(n_alerts=40, summary="s" * 5000)
    payload["groupLabels"] = {"alertname": "high_latency", "route": "r" * 3000}
    body = render_discord(payload)
    embed = body["embeds"][0]
    assert len(body["content"]) <= LIMITS["content"]
    assert len(embed["title"]) <= LIMITS["title"]
    assert len(embed["description"]) <= LIMITS["description"]
    assert len(embed["fields"]) <= LIMITS["fields"]
    assert all(len(f["value"]) <= LIMITS["field_value"] for f in embed["fields"])
    assert embed_size(embed) <= LIMITS["total"]
    assert "more alert(s) not shown" in embed["footer"]["text"]


def test_discord_429_retry_after_float() -> None:
    async def main() -> None:
        body = {"message": "rate limited", "retry_after": 0.25, "global": False}
        async with HttpReceiver([Reply(429, headers={"Retry-After": "1"}, json=body)]) as rx:
            notifier = DiscordNotifier(FakeChannel(kind="discord", url=rx.url))
            with pytest.raises(DeliveryError) as err:
                await notifier.send(alert_payload())
            await notifier.aclose()
        # The JSON float is more precise than the header's whole seconds.
        assert err.value.retry_after == 0.25

    run(main())


@pytest.mark.parametrize("status", [401, 404])
def test_discord_unknown_webhook_is_gone(status: int) -> None:
    async def main() -> None:
        async with HttpReceiver([Reply(status, json={"message": "Unknown Webhook"})]) as rx:
            notifier = DiscordNotifier(FakeChannel(kind="discord", url=rx.url))
            with pytest.raises(ChannelGone) as err:
                await notifier.send(alert_payload())
            await notifier.aclose()
        assert err.value.retryable is False
        assert err.value.status == status

    run(main())


# -- email -------------------------------------------------------------------------------------


def test_email_through_smtp_with_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_TEST_SMTP_PASSWORD", "hunter2")

    async def main() -> None:
        async with SmtpReceiver(credentials=("alerts", "hunter2")) as smtp:
            cfg = FakeChannel(
                name="mail",
                kind="email",
                smtp_host="127.0.0.1",
                smtp_port=smtp.port,
                security="none",
                username="alerts",
                password_env="WSGATE_TEST_SMTP_PASSWORD",
                from_addr="wsgate@example.org",
                to_addrs=("ops@example.org", "oncall@example.org"),
            )
            result = await EmailNotifier(cfg).send(alert_payload("n/7"))
            (mail,) = await smtp.wait_for_messages(1)
        assert result.status == 250
        assert mail.auth == b"alerts"
        assert mail.mail_from == "wsgate@example.org"
        assert mail.rcpt_tos == ("ops@example.org", "oncall@example.org")
        msg = mail.message
        assert msg["Subject"] == "[FIRING:2] high_latency route=bitfinex"
        assert msg["Message-ID"] == "<wsgate.n_7@example.org>"
        assert msg.get_content_type() == "text/plain"
        raw = msg.get_payload(decode=True)
        assert isinstance(raw, bytes)
        text = raw.decode()
        assert "p95 812ms > 500ms" in text
        assert "route = bitfinex" in text

    run(main())


def test_email_bad_password_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_TEST_SMTP_PASSWORD", "wrong")

    async def main() -> None:
        async with SmtpReceiver(credentials=("alerts", "hunter2")) as smtp:
            cfg = FakeChannel(
                kind="email",
                smtp_host="127.0.0.1",
                smtp_port=smtp.port,
                username="alerts",
                password_env="WSGATE_TEST_SMTP_PASSWORD",
                from_addr="wsgate@example.org",
                to_addrs=("ops@example.org",),
            )
            with pytest.raises(DeliveryError) as err:
                await EmailNotifier(cfg).send(alert_payload())
            assert smtp.messages == []
        assert err.value.retryable is False
        assert "535" in str(err.value)

    run(main())


def test_email_security_modes() -> None:
    assert smtp_kwargs("starttls") == {"use_tls": False, "start_tls": True}
    assert smtp_kwargs("tls") == {"use_tls": True, "start_tls": False}
    assert smtp_kwargs("none") == {"use_tls": False, "start_tls": False}
    with pytest.raises(DeliveryError):
        smtp_kwargs("ssl3")


# -- log and console ---------------------------------------------------------------------------


def test_log_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsgate.alerts")
    payload = alert_payload("n-9", summary="line one\nline two")
    run(LogNotifier(FakeChannel(kind="log")).send(payload))
    (record,) = [r for r in caplog.records if r.name == "wsgate.alerts"]
    assert record.levelno == logging.ERROR  # critical
    line = record.getMessage()
    assert "\n" not in line
    data = json.loads(line)
    assert data["id"] == "n-9"
    assert data["title"] == "[FIRING:2] high_latency route=bitfinex"
    assert data["alerts"][0]["summary"] == "line one\nline two"


def test_console_panel_to_given_console() -> None:
    buf = io.StringIO()
    notifier = ConsoleNotifier(
        FakeChannel(kind="console"), console=Console(file=buf, width=100, color_system=None)
    )
    result = run(notifier.send(alert_payload()))
    out = buf.getvalue()
    assert not result.skipped
    assert "[FIRING:2] high_latency route=bitfinex" in out
    assert "p95 812ms > 500ms" in out


def test_console_skips_without_tty_unless_demo() -> None:
    # pytest captures stderr, so it is not a TTY here.
    quiet = ConsoleNotifier(FakeChannel(kind="console"), demo=False)
    assert run(quiet.send(alert_payload())).skipped is True
    assert ConsoleNotifier(FakeChannel(kind="console"), demo=True).active is True
