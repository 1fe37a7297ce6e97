"""Daemon lifecycle: start, serve, reload, drain, stop.

Startup order matters: the lock is taken before anything binds (a second daemon must
not steal the control socket), listeners bind before READY=1 (a bind error fails
startup), and signal handlers are installed before READY=1 (systemd may send SIGHUP
at any time after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import grp
import logging
import os
import random
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from wsgate import redact
from wsgate.cluster import build_budgets, build_cluster
from wsgate.cluster.budgets import ClusterBudgets
from wsgate.config import Config, ConfigDiff, RouteConfig, diff_config, load_config
from wsgate.config.changes import keep_restart_values, key_changes
from wsgate.control.metrics_http import MetricsServer, build_registry, readiness
from wsgate.control.server import ControlServer, ensure_socket_dir
from wsgate.core.adaptive import AdaptiveSwitch
from wsgate.core.states import Transition
from wsgate.errors import BindError, ConfigError, ControlError, WsgateError
from wsgate.logsetup import flush_repeats, set_log_format
from wsgate.logthrottle import throttled_accept_errors
from wsgate.runtime.downstream.gateway import Gateway
from wsgate.runtime.ops.alerting import Alerting
from wsgate.runtime.ops.analytics import Analytics
from wsgate.runtime.ops.events import EventBus, follow, make_system_route
from wsgate.runtime.persistence.store import Store
from wsgate.runtime.persistence.store_connections import ConnectionStore, InMemoryConnectionStore
from wsgate.runtime.routing.routes import RouteEnv, RouteRuntime
from wsgate.runtime.system import sdnotify
from wsgate.runtime.system.faults import every
from wsgate.runtime.system.lock import PidLock
from wsgate.runtime.system.scheduler import Jobs
from wsgate.runtime.upstream.connection import HostBudgets, UpstreamConnection
from wsgate.version import __version__

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger("wsgate.daemon")

JOB_NAMES = ("health", "analytics", "alerts", "cleanup")
REBALANCE_EVERY = 10.0  # seconds between background rebalancer runs


class _HelpersStopped(Exception):
    """Ends the helpers' TaskGroup on shutdown."""


def _job_intervals(cfg: Config) -> dict[str, float]:
    j = cfg.jobs
    return {
        "health": j.health_check_interval,
        "analytics": j.analytics_interval,
        "alerts": j.alert_check_interval,
        "cleanup": j.cleanup_interval,
    }


def _freeze_heap() -> None:
    """Move everything the start-up built (modules, config, routes) out of the collector's
    reach. A full collection walks the whole heap: measured 35-70 ms in a daemon relaying
    1k msg/s, a pause every relayed frame behind it waits out. Frozen objects are never
    walked again (and never freed: they live as long as the process anyway); garbage made
    before the freeze is collected first."""
    gc.collect()
    gc.freeze()


def secret_values(cfg: Config) -> list[str]:
    """Every secret the config points at (env values, file contents), for log scrubbing."""
    envs = [cfg.gateway.events_token_env, *(r.token_env for r in cfg.routes)]
    envs += [c.token_env for c in cfg.gateway.clients]
    files: list[str | None] = [c.token_file for c in cfg.gateway.clients]
    for ch in cfg.alerts.channels:
        envs += [ch.url_env, ch.secret_env, ch.password_env]
        files += [ch.url_file, ch.secret_file, ch.password_file]
    files.append(cfg.cluster.credentials_file)
    out = [os.environ.get(name, "") for name in envs if name]
    out += [urlsplit(u).password or "" for u in cfg.cluster.servers]  # nats://user:pw@host
    for path in filter(None, files):
        with contextlib.suppress(OSError, UnicodeDecodeError), open(path, encoding="utf-8") as f:
            out.append(f.read(65536).strip())
    return [v for v in out if v]


def _gid(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("group %r does not exist; ignoring it for control permissions", name)
        return None


_BIND_HINTS = {
    "gateway.listen": "pick another with `wsgate run --listen HOST:PORT` or $WSGATE_GATEWAY_LISTEN",
    "metrics.listen": (
        "pick another with `wsgate run --metrics-listen HOST:PORT` or $WSGATE_METRICS_LISTEN "
        '(metrics.listen = "" turns the endpoint off)'
    ),
    "daemon.control_socket": "set daemon.control_socket (or $WSGATE_DAEMON_CONTROL_SOCKET)",
}


async def _bind(key: str, address: str, start: Any) -> None:
    """Await a listener's start; an OSError becomes a BindError naming the key and address."""
    try:
        await start
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BindError(key, address, reason.lower(), _BIND_HINTS.get(key, "")) from exc


class _Stopped(Exception):
    """Ends the daemon's TaskGroup once the bounded stop is over: stragglers are cancelled."""


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None,
        reload_source: Callable[[], Config] | None = None,
        demo: bool = False,
        seed: int | None = None,
        control: bool = True,
        signals: bool = True,
        freeze_heap: bool = False,
    ) -> None:
        self.config = config
        # `wsgate run` only (the process is ours): see _freeze_heap.
        self._freeze_heap = freeze_heap
        self.config_path = config_path
        # How a reload re-reads the config (the demo re-points endpoints at its simulator).
        self._reload_source = reload_source or (lambda: load_config(self._require_path()))
        self.demo = demo
        # Demo only: the in-process exchange simulators, for `wsgate status` and `wsgate sim`.
        self.simulators: dict[str, str] = {}
        self.embedded = not (control and signals)  # the in-process Gateway API
        self._want_control = control
        self._want_signals = signals
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.generation = 1
        self.last_reload: dict[str, Any] | None = None
        self.rng = random.Random(seed)
        self.budgets = HostBudgets()
        self.env = RouteEnv(
            budgets=self.budgets,
            rng=self.rng,
            history_points=config.metrics.history_points,
            per_message_metrics=config.metrics.per_message,
            max_connections=config.daemon.max_connections,
            gateway_linger=config.gateway.linger,
            client_messages_per_second=config.gateway.client_messages_per_second,
            max_subscriptions_per_session=config.gateway.max_subscriptions_per_session,
        )
        self.env.total_connections = lambda: sum(len(r.connections()) for r in self.routes.values())
        self.env.on_transition.append(self._on_transition)
        self.env.on_adaptive_switch.append(self._on_adaptive_switch)
        # Every upstream connection is registered here; clustering replaces the implementation.
        self.connection_store: ConnectionStore = InMemoryConnectionStore(config.daemon.node_id)
        self.env.on_transition.append(self.connection_store.observe)
        self.routes: dict[str, RouteRuntime] = {}
        self.faults = self.env.faults  # the error policy for per-frame and per-tick work
        self.gateway = Gateway(
            config.gateway, self.routes, flusher=self.env.flusher, faults=self.faults
        )
        self.jobs = Jobs(
            {
                "health": self._job_health,
                "analytics": self._job_analytics,
                "alerts": self._job_alerts,
                "cleanup": self._job_cleanup,
            }
        )
        self.control: ControlServer | None = None
        self.lock = PidLock.for_socket(config.daemon.control_socket)
        self.notify = sdnotify.Notifier()
        self.loop_lag = 0.0
        self.loop_lag_samples = 0  # the probe's progress (a stuck probe reads as no lag)
        self.rebalance_runs = 0
        # Transitions, health-band crossings and alerts for dashboards and `events.follow`.
        self.events = EventBus()
        # One SQLite store per daemon: analytics history, alert state, the outbox.
        self.store = Store(os.path.join(config.daemon.state_dir, "wsgate.db"))
        self.analytics = Analytics(
            self.routes,
            store=self.store,
            bus=self.events,
            retention=lambda: self.config.metrics.history_retention,
            alerting=lambda: getattr(self, "alerting", None),
        )
        self.metrics_http: MetricsServer | None = None
        self._stop = asyncio.Event()
        self._helpers_stop = asyncio.Event()
        self.rebalance_every = REBALANCE_EVERY
        self._reload_lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._sigint_count = 0
        self._socket_dirs: list[str] = []
        self._route_tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self.alerting: Alerting | None = None  # built in _start: it opens daemon.store
        # [cluster]: a LocalCluster on one node, a ClusterNode on NATS (wsgate.cluster).
        self.cluster = build_cluster(self, status=self._status_doc)
        # share = "cluster" routes: their hosts' connect budgets count for the cluster.
        self.cluster_budgets: ClusterBudgets | None = build_budgets(self.cluster, config, self.rng)
        self.budgets.shared = self.cluster_budgets

    def _status_doc(self) -> dict[str, Any]:
        from wsgate.control.api import status

        return status(self)

    def _require_path(self) -> str:
        if not self.config_path:
            raise ControlError("invalid_config", "the daemon was started without a config file")
        return self.config_path

    # ---------------------------------------------------------------- lifecycle
    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`stop`; returns the process exit code."""
        # Made as RuntimeDirectory would (0750, the control group), before the lock inside it.
        self._socket_dirs = ensure_socket_dir(
            self.config.daemon.control_socket, _gid(self.config.daemon.control_group)
        )
        os.makedirs(self.config.daemon.state_dir, mode=0o750, exist_ok=True)
        self.lock.acquire()
        try:
            await self.cluster.join()  # a node-id clash fails startup here, with one line
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self._start(tg)
                await self._stop.wait()
                await self._shutdown()
                # The bound covers the whole stop: whatever still runs now is cancelled.
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            self.store.close()
            self.lock.release()
        return 0

    async def _start(self, tg: asyncio.TaskGroup) -> None:
        from wsgate.control.api import build_handlers

        cfg = self.config
        redact.set_secrets(secret_values(cfg))
        # First: it creates daemon.store (shared), restores alert state, replays the outbox.
        self.alerting = Alerting(self)
        await self.alerting.start(tg)
        self.cluster.attach(self.alerting)
        self.cluster.start(tg)
        if self.cluster_budgets is not None:
            tg.create_task(self.cluster_budgets.run(), name="cluster-budgets")
        for route_cfg in cfg.routes:
            self._add_route(route_cfg, tg)
        self.gateway.add_system_route("_wsgate", make_system_route(self.events))
        await _bind("gateway.listen", cfg.gateway.listen, self.gateway.start())
        if cfg.metrics.enabled:
            self.metrics_http = MetricsServer(
                cfg.metrics.host, cfg.metrics.port, build_registry(self), lambda: readiness(self)
            )
            await _bind("metrics.listen", cfg.metrics.listen, self.metrics_http.start())
        if self._want_control:
            self.control = ControlServer(
                cfg.daemon.control_socket,
                build_handlers(self),
                read_gid=_gid(cfg.daemon.control_group),
                admin_gid=_gid(cfg.daemon.admin_group),
                socket_dirs=self._socket_dirs,
            )
            await _bind("daemon.control_socket", cfg.daemon.control_socket, self.control.start())
        self.jobs.start(_job_intervals(cfg))
        if self._want_signals:
            self._install_signals()
        tg.create_task(self._helpers(), name="helpers")
        if self._freeze_heap:
            _freeze_heap()
        self.notify.ready(self._status_line())
        self.ready.set()
        log.info(
            "wsgate %s ready: node %s, gateway ws://%s:%d, control %s, %d route(s)",
            __version__,
            cfg.daemon.node_id,
            cfg.gateway.host,
            self.gateway.port,
            cfg.daemon.control_socket,
            len(self.routes),
        )

    def add_route(self, route_cfg: RouteConfig) -> RouteRuntime:
        """Start a route at run time (embedding API); the next reload makes the file the truth."""
        if self._tg is None or not self.ready.is_set():
            raise WsgateError("the daemon is not running")
        if route_cfg.name in self.routes:
            raise WsgateError(f"route {route_cfg.name!r} already exists")
        self.config = dataclasses.replace(self.config, routes=(*self.config.routes, route_cfg))
        self._add_route(route_cfg, self._tg)
        return self.routes[route_cfg.name]

    def _add_route(self, route_cfg: Any, tg: asyncio.TaskGroup) -> None:
        rt = RouteRuntime(route_cfg, self.env)
        self.routes[rt.name] = rt
        engine = getattr(self.cluster, "engine", None)
        if rt.hub is not None and engine is not None:
            # The data plane of every shared route: it acts only while share = "cluster".
            from wsgate.cluster.data_plane import RouteShare

            rt.hub.attach_share(
                RouteShare(
                    self.config.cluster,
                    self.config.daemon.node_id,
                    rt.name,
                    engine,
                    rt.hub,
                    on_event=lambda data: self.events.publish("cluster_move", data),
                    peer_states=getattr(self.cluster, "peer_states", None),
                    peer_summaries=getattr(self.cluster, "peer_summaries", None),
                    rng=random.Random(self.rng.random()),
                    flusher=self.env.flusher,
                )
            )
        task = tg.create_task(rt.run(), name=f"route-{rt.name}")
        self._route_tasks.add(task)
        task.add_done_callback(self._route_tasks.discard)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        # We own the process (not embedded): failed accepts under descriptor exhaustion
        # become one line per interval, not a traceback per attempt.
        loop.set_exception_handler(throttled_accept_errors(log))
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            log.error("second SIGINT: exiting immediately")
            os._exit(130)
        self.stop("SIGINT")

    def _on_sighup(self) -> None:
        assert self._tg is not None
        self._tg.create_task(self._reload_quietly("SIGHUP"))

    async def _reload_quietly(self, trigger: str) -> None:
        with contextlib.suppress(ControlError):
            await self.reload(trigger)

    def stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            log.info("stopping (%s)", reason)
            self._stop.set()

    async def _shutdown(self) -> None:
        """Bounded graceful stop: sessions get 1001, alerts flush, upstreams close, the
        socket is removed — every step within what is left of one ``shutdown_timeout``."""
        self.notify.stopping()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.daemon.shutdown_timeout

        def left(cap: float = float("inf")) -> float:
            return max(0.0, min(cap, deadline - loop.time()))

        shares = [rt.hub.share for rt in self.routes.values() if rt.hub and rt.hub.share]
        if shares:  # share = "cluster": successors subscribe before this owner goes
            from wsgate.cluster.handover import HAND_OVER_EXTRA

            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left(self.config.cluster.lease_ttl + HAND_OVER_EXTRA)):
                    await asyncio.gather(
                        *(s.hand_over(self.config.cluster.lease_ttl) for s in shares),
                        return_exceptions=True,
                    )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left(2.0)):
                await self.cluster.close()  # peers record a graceful leave: no page
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left()):
                await self.gateway.close(1001, "wsgate shutting down")
        if self.metrics_http is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left(2.0)):
                    await self.metrics_http.close()
        await self.jobs.shutdown(grace=left(2.0))
        if self.alerting is not None:
            # Whatever is not delivered by then stays in the outbox for the next start.
            await self.alerting.close(left())
        for rt in self.routes.values():
            rt.stop()
        if self._route_tasks:
            await asyncio.wait(set(self._route_tasks), timeout=left())
        if self.control is not None:
            await self.control.close(grace=left(2.0))
        self._helpers_stop.set()  # loop lag, rebalancer, watchdog: this daemon's only
        log.info("stopped")

    async def _helpers(self) -> None:
        """The daemon's background helpers, owned here and ended by :meth:`_shutdown`.

        Two daemons may share an event loop (embedded ``Gateway``s): each ends exactly
        its own helpers.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._measure_loop_lag(), name="loop-lag")
                tg.create_task(
                    every(self.rebalance_every, self._rebalance, self.faults, "daemon.rebalance"),
                    name="rebalance",
                )
                interval = self.notify.watchdog_interval()
                if interval:
                    tg.create_task(self._watchdog(interval), name="watchdog")
                await self._helpers_stop.wait()
                raise _HelpersStopped  # the helpers never end on their own
        except* _HelpersStopped:
            pass

    def _rebalance(self) -> None:
        # The planner's own hysteresis (sustain, min_interval, max moves) bounds the rate;
        # this only gives it fresh loads and finishes drains that lacked a target.
        now = time.monotonic()
        self.rebalance_runs += 1
        for rt in list(self.routes.values()):
            try:
                rt.plan_rebalance(now, dry_run=False)
                if rt.hub is not None:
                    rt.hub.retry_migrations()
            except Exception as exc:  # one route's failure must not skip the others
                self.faults.record("daemon.rebalance", exc, f"route {rt.name}")

    async def _measure_loop_lag(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.5)
            self.loop_lag = max(0.0, time.monotonic() - start - 0.5)
            self.loop_lag_samples += 1

    async def _watchdog(self, interval: float) -> None:
        # Runs on the loop, so a blocked loop misses pings and systemd restarts us.
        while True:
            self.notify.watchdog()
            await asyncio.sleep(interval)

    def _status_line(self) -> str:
        up = sum(rt.open_connections() for rt in self.routes.values())
        return (
            f"gen {self.generation}: {len(self.routes)} routes, {up} upstreams open, "
            f"{len(self.gateway.sessions)} sessions"
        )

    def _on_transition(self, conn: UpstreamConnection, t: Transition) -> None:
        self.events.publish("transition", {**t.as_dict(), "route": conn.settings.route})

    def _on_adaptive_switch(self, route: str, switch: AdaptiveSwitch) -> None:
        self.events.publish(
            "adaptive",
            {
                "route": route,
                "old": switch.old.value if switch.old else None,
                "new": switch.new.value,
                "reason": switch.reason,
            },
        )

    # ---------------------------------------------------------------- reload
    async def reload(self, trigger: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Validate the whole new config; on any error keep the old one and report all errors.

        The reply lists every changed key (``{"key", "old", "new"}``) and, separately, the
        keys that keep their running value until a restart (wsgate/config/changes.py).
        ``dry_run`` reads and validates the file and reports the same, applying nothing.
        """
        async with self._reload_lock:
            if not dry_run:
                self.notify.reloading()
            try:
                new = self._reload_source()
            except ConfigError as exc:
                if dry_run:
                    raise ControlError(
                        "invalid_config",
                        f"{len(exc.problems)} config error(s); the running config is unchanged",
                        details=[p.as_dict() for p in exc.problems],
                    ) from exc
                for p in exc.problems:
                    log.error("reload (%s) rejected: %s", trigger, p.render(exc.filename))
                self.last_reload = {
                    "at": time.time(),
                    "ok": False,
                    "trigger": trigger,
                    "errors": [p.render(exc.filename) for p in exc.problems],
                }
                self.notify.status(
                    f"reload failed: {len(exc.problems)} error(s), "
                    f"kept config gen {self.generation}"
                )
                self.notify.ready()
                raise ControlError(
                    "invalid_config",
                    f"{len(exc.problems)} config error(s); kept the running config",
                    details=[p.as_dict() for p in exc.problems],
                ) from exc
            changes = key_changes(self.config, new)
            result: dict[str, Any] = {
                "generation": self.generation,
                "dry_run": dry_run,
                "changed": [c.as_dict() for c in changes],
                "restart_required": [c.key for c in changes if c.restart_required],
            }
            if dry_run:
                return result
            applied = keep_restart_values(self.config, new)
            diff = diff_config(self.config, applied)
            redact.set_secrets([*secret_values(self.config), *secret_values(applied)])
            result["applied"] = self._apply_access(applied)
            self._apply(applied, diff)
            self.generation += 1
            result["generation"] = self.generation
            self.last_reload = {"at": time.time(), "ok": True, "trigger": trigger, **result}
            if changes:
                log.info("reload (%s) applied %d change(s)", trigger, len(changes))
                for change in changes:
                    log.info("reload: %s", change.render())
            else:
                log.info("reload (%s): no changes", trigger)
            for key in result["restart_required"]:
                log.warning("reload: %s changed but keeps its running value until a restart", key)
            self.notify.ready(self._status_line())
            return result

    def _apply_access(self, new: Config) -> list[str]:
        """Apply the settings that decide who gets in; one line per change saying how far.

        A reload must never report an access change it did not make: each of these takes
        effect here, and the reply says which connections it reached.
        """
        old, notes = self.config, []
        d_old, d_new = old.daemon, new.daemon
        if (d_old.control_group, d_old.admin_group) != (d_new.control_group, d_new.admin_group):
            read_gid, admin_gid = _gid(d_new.control_group), _gid(d_new.admin_group)
            if self.control is not None:
                self.control.set_groups(read_gid, admin_gid)
            notes.append(
                f"daemon.control_group = {d_new.control_group!r} (gid {read_gid}), "
                f"daemon.admin_group = {d_new.admin_group!r} (gid {admin_gid}): every control "
                "request from now on is judged by them, open connections included"
            )
        g_old, g_new = old.gateway, new.gateway
        events_old = (g_old.events_token_env, g_old.events_require_token, g_old.origins)
        events_new = (g_new.events_token_env, g_new.events_require_token, g_new.origins)
        if events_old != events_new:
            closed = self.gateway.close_system_sessions(1008, "event stream access changed")
            notes.append(
                "gateway.events_token_env / events_require_token / origins: new event "
                f"streams need the new access; {closed} open stream(s) closed to re-connect"
            )
        # Every reload re-reads the certificate (renewed in place by an ACME client).
        try:
            tls_note = self.gateway.reload_tls(g_new.tls_cert_file, g_new.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            tls_note = f"gateway.tls_cert_file not re-read ({exc}); the running one stays"
        if tls_note is not None:
            notes.append(tls_note)
        # Every reload re-reads the clients' tokens too (a rotated token_file, say).
        clients_note = self.gateway.clients.load(g_new.clients)
        if clients_note is not None:
            notes.append(clients_note)
        if g_old.max_message_bytes != g_new.max_message_bytes:
            n = self.gateway.set_max_message_bytes(g_new.max_message_bytes)
            notes.append(
                f"gateway.max_message_bytes = {g_new.max_message_bytes}: applies to new "
                f"sessions and to the {n} open one(s)"
            )
        return notes

    def _apply(self, new: Config, diff: ConfigDiff) -> None:
        assert self._tg is not None
        for name in diff.routes_removed:
            rt = self.routes.pop(name)
            rt.stop()
            for s in list(rt.sessions):
                s.close_nowait(1001, "route removed by reload")
        for name in diff.routes_changed:
            old_r, new_r = self.config.route(name), new.route(name)
            if (old_r.dialect, old_r.type) == (new_r.dialect, new_r.type):
                self.routes[name].reconfigure(new_r)
                continue
            # Another protocol or connection type is another route: build it anew.
            rt = self.routes.pop(name)
            rt.stop()
            for s in list(rt.sessions):
                s.close_nowait(1012, "route re-created by reload (dialect or type changed)")
            self._add_route(new_r, self._tg)
        for name in diff.routes_added:
            self._add_route(new.route(name), self._tg)
        if diff.jobs_changed:
            self.jobs.sync(_job_intervals(new))
        # Live gateway limits apply to new handshakes at once; listen needs a restart.
        self.gateway.cfg = dataclasses.replace(new.gateway, listen=self.config.gateway.listen)
        self.env.max_connections = new.daemon.max_connections
        d_old, d_new = self.config.daemon, new.daemon
        if (d_old.log_level, d_old.log_format) != (d_new.log_level, d_new.log_format):
            logging.getLogger().setLevel(d_new.log_level.upper())
            set_log_format(d_new.log_format)
        self._apply_metrics(new)
        self.env.gateway_linger = new.gateway.linger
        self.env.client_messages_per_second = new.gateway.client_messages_per_second
        self.env.max_subscriptions_per_session = new.gateway.max_subscriptions_per_session
        if self.alerting is not None and (diff.alerts_changed or diff.channels_changed):
            self._tg.create_task(self.alerting.reconfigure(new, diff.channels_changed))
        self.config = new

    def _apply_metrics(self, new: Config) -> None:
        m = new.metrics
        if (m.history_points, m.per_message) == (
            self.env.history_points,
            self.env.per_message_metrics,
        ):
            return
        self.env.history_points = m.history_points
        self.env.per_message_metrics = m.per_message
        for rt in self.routes.values():
            for conn in rt.connections():
                conn.metrics.set_history_points(m.history_points)
                conn.settings = dataclasses.replace(
                    conn.settings, per_message_metrics=m.per_message
                )

    def live_settings(self) -> dict[str, Any]:
        """Key -> the value the running components use (wsgate/running_settings.py)."""
        from wsgate.running_settings import running_settings

        return running_settings(self)

    # ---------------------------------------------------------------- jobs
    async def _job_health(self) -> None:
        self.analytics.run_health()
        flush_repeats()  # a collapsed warning that stopped repeating still reports its count
        now = time.monotonic()
        for rt in list(self.routes.values()):
            rt.observe_balance(now)  # fresh scores in: `adaptive` reconsiders even when idle

    async def _job_analytics(self) -> None:
        self.analytics.run_analytics()

    async def _job_alerts(self) -> None:
        if self.alerting is not None:
            await self.alerting.evaluate()

    async def _job_cleanup(self) -> None:
        self.analytics.run_cleanup()

    # ---------------------------------------------------------------- views
    async def follow_events(self) -> AsyncIterator[tuple[str, Any]]:
        async for ev in follow(self.events, self._stop):
            yield ev


async def run_daemon(daemon: Daemon) -> int:
    return await daemon.serve()
