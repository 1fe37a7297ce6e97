"""Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` on a small asyncio HTTP/1.1 server.

The server binds ``metrics.listen`` (127.0.0.1:9108 by default; ``""`` disables it),
answers GET and HEAD only, reads at most 8 KiB of request head within 5 s, and closes
the connection after each response. A bind error fails daemon startup.

``/metrics`` is rendered by a collector that reads live statistics at scrape time from a
registry passed in (never the global one); the format follows the scraper's Accept
header (``prometheus_client.exposition.choose_encoder``). Metric families:

================================================  ======================================
``wsgate_upstream_messages_received_total``       frames received {route,connection,type}
``wsgate_upstream_messages_sent_total``           frames sent {route,connection,type}
``wsgate_upstream_bytes_received_total``          bytes received {route,connection,type}
``wsgate_upstream_bytes_sent_total``              bytes sent {route,connection,type}
``wsgate_upstream_rtt_seconds``                   histogram of every RTT sample of the
                                                  route's connections {route,type,kind=
                                                  "ws"|"app"} (ws = WebSocket ping RTT,
                                                  app = exchange-level ping)
``wsgate_upstream_latency_ewma_seconds``          gauge: latency EWMA {route,connection,
                                                  type,kind}
``wsgate_upstream_reconnects_total``              {route,connection,type}
``wsgate_upstream_errors_total``                  {route,connection,type}
``wsgate_upstream_last_message_age_seconds``      {route,connection,type}
``wsgate_connection_state``                       1 for the current state, 0 for the
                                                  others {route,connection,state}
``wsgate_sessions``                               {route}
``wsgate_subscriptions``                          {route,state}
``wsgate_fanout_deliveries_total``                frames queued to sessions {route}
``wsgate_health_score``                           0..100 {scope=connection|route|type|
                                                  system, name}
``wsgate_alerts_active``                          {severity}
``wsgate_job_duration_seconds``                   last run {job_name}
``wsgate_job_runs_total`` / ``_failures_total``   {job_name}
``wsgate_events_published_total``                 event bus
``wsgate_events_dropped_total``                   events dropped for slow consumers
``wsgate_handler_errors_total``                  per-frame/per-tick failures survived
                                                  {site} (runtime.faults)
``wsgate_config_generation``, ``wsgate_loop_lag_seconds``, ``wsgate_build_info``
``process_*``, ``python_info``                    prometheus_client's process collector:
                                                  CPU, memory, ``process_open_fds``
                                                  against ``process_max_fds``
================================================  ======================================

The bot side (sessions, refused handshakes, drops, subscriptions per session) is in
:mod:`wsgate.control.metrics_bots`. No label is named ``job`` (Prometheus's own target
label would rename it ``exported_job``) and no gauge carries a ``quantile`` label:
``promtool check metrics`` accepts the output (tests/control/test_promtool.py).

Latency is a histogram per route and kind, fed by every sample of every connection of
the route, so it aggregates across connections and keeps counting over reconnects;
the buckets run from 0.5 ms (loopback) to 5 s (core/histogram.py). The per-connection
EWMA gauge is the number ``wsgate connections`` shows.

``/readyz`` is 200 when the config is loaded and every listener is bound (the daemon
signalled ready) and each ``required`` route has at least one OPEN upstream connection;
routes with ``min_connections = 0`` keep no warm pool by design and are not waited
for. Otherwise 503 with a JSON body naming the reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from wsgate.cluster.metrics import cluster_metrics
from wsgate.core.states import ConnState
from wsgate.core.types import Severity, StrategyName
from wsgate.version import __version__

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView

__all__ = [
    "MetricsServer",
    "MetricsServerStats",
    "WsgateCollector",
    "build_registry",
    "readiness",
]

log = logging.getLogger("wsgate.metrics")

MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0
_CONN_LABELS = ["route", "connection", "type"]


class WsgateCollector(Collector):
    """Reads the daemon's live state on every scrape (runs on the event loop thread)."""

    def __init__(self, daemon: DaemonView) -> None:
        self.d = daemon

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._routes()
        yield from self._health()
        yield from self._alerts()
        yield from self._jobs()
        yield from self._process()
        yield from cluster_metrics(self.d)

    def _connections(self) -> Iterator[Metric]:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=_CONN_LABELS)

        msgs = counter("wsgate_upstream_messages_received", "Frames received from upstream.")
        msgs_out = counter("wsgate_upstream_messages_sent", "Frames sent upstream.")
        nbytes = counter("wsgate_upstream_bytes_received", "Bytes received from upstream.")
        nbytes_out = counter("wsgate_upstream_bytes_sent", "Bytes sent upstream.")
        reconnects = counter("wsgate_upstream_reconnects", "Reconnections after a drop.")
        errors = counter("wsgate_upstream_errors", "Errors seen on the connection.")
        latency = GaugeMetricFamily(
            "wsgate_upstream_latency_ewma_seconds",
            "Latency EWMA: kind=ws is the WebSocket ping RTT, kind=app the exchange ping.",
            labels=[*_CONN_LABELS, "kind"],
        )
        rtt = HistogramMetricFamily(
            "wsgate_upstream_rtt_seconds",
            "Round-trip times of every connection of the route (kind=ws: WebSocket ping, "
            "app: exchange ping); use histogram_quantile() over rate() of the buckets.",
            labels=["route", "type", "kind"],
        )
        age = GaugeMetricFamily(
            "wsgate_upstream_last_message_age_seconds",
            "Seconds since the last frame from upstream.",
            labels=_CONN_LABELS,
        )
        state = GaugeMetricFamily(
            "wsgate_connection_state",
            "1 for the connection's current state, 0 for the others.",
            labels=["route", "connection", "state"],
        )
        now = time.monotonic()
        for rt in list(self.d.routes.values()):
            ctype = rt.cfg.type.value
            for conn in rt.connections():
                labels = [rt.name, conn.id, ctype]
                s = conn.metrics.snapshot(now)
                msgs.add_metric(labels, s.messages_in)
                msgs_out.add_metric(labels, s.messages_out)
                nbytes.add_metric(labels, s.bytes_in)
                nbytes_out.add_metric(labels, s.bytes_out)
                reconnects.add_metric(labels, s.reconnects_total)
                errors.add_metric(labels, s.errors_total)
                for kind, v in (("ws", s.latency_ewma), ("app", s.latency_app_ewma)):
                    if v is not None:
                        latency.add_metric([*labels, kind], v)
                if s.last_message_age is not None:
                    age.add_metric(labels, s.last_message_age)
                current = conn.state
                for st in ConnState:
                    state.add_metric([rt.name, conn.id, st.label], 1.0 if st is current else 0.0)
            for kind, hist in rt.rtt.items():
                rtt.add_metric([rt.name, ctype, kind], hist.buckets(), hist.sum)
        yield from (msgs, msgs_out, nbytes, nbytes_out, latency, rtt, age, reconnects, errors)
        yield state

    def _routes(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("wsgate_sessions", "Downstream sessions.", labels=["route"])
        subs = GaugeMetricFamily(
            "wsgate_subscriptions", "Shared subscriptions by state.", labels=["route", "state"]
        )
        fanout = CounterMetricFamily(
            "wsgate_fanout_deliveries", "Frames queued to downstream sessions.", labels=["route"]
        )
        adaptive = GaugeMetricFamily(
            "wsgate_route_adaptive_strategy",
            "1 for the strategy `adaptive` applies on the route now, 0 for the others.",
            labels=["route", "strategy"],
        )
        switches = CounterMetricFamily(
            "wsgate_route_adaptive_switches",
            "Changes of the strategy `adaptive` applies.",
            labels=["route"],
        )
        session_errors = CounterMetricFamily(
            "wsgate_session_errors",
            "Errors downstream sessions caused (unknown symbol, bad request, rate limit); "
            "never counted against an upstream connection.",
            labels=["route", "kind"],
        )
        for rt in list(self.d.routes.values()):
            choice = rt.balancer.statistics().adaptive
            if rt.balancer.strategy is StrategyName.ADAPTIVE and choice is not None:
                for strat in StrategyName:
                    if strat not in (StrategyName.ADAPTIVE, StrategyName.PEAK_EWMA):
                        adaptive.add_metric([rt.name, strat.value], float(strat is choice.strategy))
                switches.add_metric([rt.name], choice.switches)
            sessions.add_metric([rt.name], len(rt.sessions))
            if rt.hub is not None:
                st = rt.hub.statistics()
                for state, n in sorted(st.subscriptions.items()):
                    subs.add_metric([rt.name, state], n)
                fanout.add_metric([rt.name], st.deliveries)
                for kind, n in sorted(st.session_errors.items()):
                    session_errors.add_metric([rt.name, kind], n)
        yield from (sessions, subs, fanout, adaptive, switches, session_errors)

    def _health(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "wsgate_health_score", "Health score 0..100.", labels=["scope", "name"]
        )
        a = self.d.analytics
        ov = a.overview()
        if ov.health is not None:
            g.add_metric(["system", "overall"], ov.health)
        for t in ov.by_type:
            if t.health is not None:
                g.add_metric(["type", t.type.value], t.health)
        for r in ov.by_route:
            if r.health is not None:
                g.add_metric(["route", r.route], r.health)
        for rt in list(self.d.routes.values()):
            for conn in rt.connections():
                ch = a.connection_health(conn.id)
                if ch is not None:
                    g.add_metric(["connection", conn.id], ch.score)
        yield g

    def _alerts(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "wsgate_alerts_active", "Pending and firing alerts.", labels=["severity"]
        )
        counts = {s.value: 0 for s in Severity}
        alerting = getattr(self.d, "alerting", None)
        active = getattr(alerting, "active", None)
        if callable(active):
            try:
                for view in active():
                    # AlertView objects from the engine, or their dict form from Alerting.
                    sev = view.get("severity") if isinstance(view, dict) else view.severity
                    key = getattr(sev, "value", sev)
                    if isinstance(key, str):
                        counts[key] = counts.get(key, 0) + 1
            except Exception:  # a scrape must not fail because one subsystem did
                log.exception("alerts_active: reading the alerting engine failed")
        for sev, n in counts.items():
            g.add_metric([sev], n)
        yield g

    def _jobs(self) -> Iterator[Metric]:
        dur = GaugeMetricFamily(
            "wsgate_job_duration_seconds", "Duration of the job's last run.", labels=["job_name"]
        )
        mx = GaugeMetricFamily(
            "wsgate_job_max_duration_seconds", "Longest run of the job.", labels=["job_name"]
        )
        runs = CounterMetricFamily("wsgate_job_runs", "Job runs.", labels=["job_name"])
        fails = CounterMetricFamily(
            "wsgate_job_failures", "Job runs that raised.", labels=["job_name"]
        )
        for j in self.d.jobs.statistics():
            if j.last_duration is not None:
                dur.add_metric([j.name], j.last_duration)
            mx.add_metric([j.name], j.max_duration)
            runs.add_metric([j.name], j.runs)
            fails.add_metric([j.name], j.failures)
        yield from (dur, mx, runs, fails)

    def _process(self) -> Iterator[Metric]:
        bus = self.d.events.statistics()
        yield CounterMetricFamily(
            "wsgate_events_published", "Events published on the bus.", value=bus.published
        )
        yield CounterMetricFamily(
            "wsgate_events_dropped",
            "Events dropped because a consumer fell behind.",
            value=bus.dropped,
        )
        yield GaugeMetricFamily(
            "wsgate_config_generation", "Config generation (1 + reloads).", value=self.d.generation
        )
        yield GaugeMetricFamily("wsgate_loop_lag_seconds", "Event loop lag.", value=self.d.loop_lag)
        handler_errors = CounterMetricFamily(
            "wsgate_handler_errors",
            "Failures of per-frame or per-tick work, counted and survived.",
            labels=["site"],
        )
        for site, n in sorted(self.d.faults.statistics().by_site.items()):
            handler_errors.add_metric([site], n)
        yield handler_errors
        info = InfoMetricFamily("wsgate_build", "wsgate build information.")
        info.add_metric([], {"version": __version__, "python": sys.version.split()[0]})
        yield info


def build_registry(daemon: DaemonView) -> CollectorRegistry:
    from prometheus_client import PlatformCollector, ProcessCollector

    from wsgate.control.metrics_bots import BotSideCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(WsgateCollector(daemon))
    registry.register(BotSideCollector(daemon))
    # process_* (CPU, memory, open fds against process_max_fds, start time) and python_info.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def readiness(daemon: DaemonView) -> tuple[bool, dict[str, Any]]:
    """``/readyz``: ready, plus the reasons it is not (empty when ready)."""
    reasons: list[str] = []
    if not daemon.ready.is_set():
        reasons.append("starting: config loaded but listeners not all bound yet")
    for cfg in daemon.config.routes:
        if not cfg.required or cfg.min_connections == 0:
            continue
        rt = daemon.routes.get(cfg.name)
        if rt is None:
            reasons.append(f"route {cfg.name}: not started")
        elif not any(c.state is ConnState.OPEN for c in rt.connections()):
            reasons.append(f"route {cfg.name}: no open upstream connection")
    return not reasons, {"ready": not reasons, "reasons": reasons}


@dataclass(frozen=True)
class MetricsServerStats:
    listen: str
    requests: int
    scrapes: int
    rejected: int
    last_scrape_duration: float | None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class MetricsServer:
    """``async with``-free lifecycle like the gateway: ``await start()``, ``await close()``."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.host, self._port = host, port
        self.registry = registry
        self._ready = ready
        self.max_request_bytes = max_request_bytes
        self.timeout = timeout
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self.requests = self.scrapes = self.rejected = 0
        self.last_scrape_duration: float | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind now; an OSError (address in use, ...) propagates and fails startup."""
        self._server = await asyncio.start_server(
            self._on_client, self.host, self._port, limit=self.max_request_bytes
        )
        log.info("metrics on http://%s:%d/metrics (/healthz, /readyz)", self.host, self.port)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._server.wait_closed()
        self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            status, headers, body, head_only = await self._respond(reader)
            self._write(writer, status, headers, b"" if head_only else body, len(body))
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(
        self, reader: asyncio.StreamReader
    ) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        self.requests += 1
        try:
            async with asyncio.timeout(self.timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return self._reject(408, "request head not received in time\n")
        except asyncio.LimitOverrunError:
            return self._reject(431, f"request head over {self.max_request_bytes} bytes\n")
        except asyncio.IncompleteReadError:
            return self._reject(400, "incomplete request\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return self._reject(400, "malformed request line\n")
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            status, hdrs, body, _ = self._reject(405, "only GET and HEAD\n")
            return status, [*hdrs, ("Allow", "GET, HEAD")], body, False
        head_only = method == "HEAD"
        path = urlsplit(target).path
        if path == "/metrics":
            start = time.perf_counter()
            try:
                encoder, ctype = choose_encoder(headers.get("accept", ""))
                body = encoder(self.registry)
            except Exception:
                log.exception("metrics scrape failed")
                return self._reject(500, "scrape failed; see the daemon log\n")
            self.scrapes += 1
            self.last_scrape_duration = time.perf_counter() - start
            return 200, [("Content-Type", ctype)], body, head_only
        if path == "/healthz":
            return 200, [("Content-Type", "text/plain; charset=utf-8")], b"ok\n", head_only
        if path == "/readyz":
            ok, doc = self._ready()
            body = (json.dumps(doc) + "\n").encode()
            return (200 if ok else 503), [("Content-Type", "application/json")], body, head_only
        return self._reject(404, "try /metrics, /healthz or /readyz\n")

    def _reject(self, status: int, text: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        if status >= 400:
            self.rejected += 1
        return status, [("Content-Type", "text/plain; charset=utf-8")], text.encode(), False

    @staticmethod
    def _write(
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        length: int,
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += [f"Content-Length: {length}", "Connection: close", "Server: wsgate", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + body)

    def statistics(self) -> MetricsServerStats:
        return MetricsServerStats(
            listen=f"{self.host}:{self.port}",
            requests=self.requests,
            scrapes=self.scrapes,
            rejected=self.rejected,
            last_scrape_duration=self.last_scrape_duration,
        )

    def __repr__(self) -> str:
        return f"<MetricsServer {self.host}:{self.port} requests={self.requests}>"
