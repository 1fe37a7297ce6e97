"""Control methods for balancing: drain, weights, strategies, rebalance plans."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wsgate.control.audit import operator_action
from wsgate.control.schema import NO_PARAMS, Schema, integer, string
from wsgate.control.server import Caller, Handler
from wsgate.core.types import StrategyName
from wsgate.errors import ControlError
from wsgate.redact import mask_url

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView
    from wsgate.runtime.routing.routes import RouteRuntime

__all__ = ["adaptive_doc", "build_balance_handlers"]

log = logging.getLogger("wsgate.control")

MAX_WEIGHT = 1_000_000  # endpoint weights are relative; a bigger one is a typo


def _route(d: DaemonView, name: object) -> RouteRuntime:
    rt = d.routes.get(str(name))
    if rt is None:
        raise ControlError("not_found", f"no route {name!r}; routes: {', '.join(d.routes)}")
    return rt


def _plain(stats: Any) -> dict[str, Any]:
    """A statistics dataclass as JSON-able data (mappings and enums flattened)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(stats):
        v = getattr(stats, f.name)
        if isinstance(v, Mapping):
            v = {str(k): x for k, x in v.items()}
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = _plain(v)
        out[f.name] = v
    return out


def adaptive_doc(rt: RouteRuntime) -> dict[str, Any] | None:
    """What `adaptive` applies on the route now and why; None for a fixed strategy."""
    stats = rt.balancer.statistics()
    if stats.strategy is not StrategyName.ADAPTIVE or stats.adaptive is None:
        return None
    doc = stats.adaptive.as_dict()
    since = doc.pop("since")
    assert isinstance(since, float)
    doc["held_for"] = round(time.monotonic() - since, 3)  # the route's clock is monotonic
    return doc


def _who(caller: Caller) -> str:
    return f"uid {caller.uid} pid {caller.pid}"


def build_balance_handlers(d: DaemonView) -> dict[str, Handler]:
    async def h_drain(params: dict[str, Any], caller: Caller) -> Any:
        conn_id = params["id"]
        for rt in d.routes.values():
            if conn_id in rt.pool:
                started = rt.drain(conn_id, f"drained by {_who(caller)}")
                operator_action(d, "drain", rt.pool[conn_id], caller)
                log.info("connection %s drained by %s (%d moves)", conn_id, _who(caller), started)
                return {"id": conn_id, "state": rt.pool[conn_id].state.label, "moves": started}
        raise ControlError("not_found", f"no pooled upstream connection {conn_id!r}")

    async def h_weight(params: dict[str, Any], caller: Caller) -> Any:
        rt = _route(d, params["route"])
        weight = params["weight"]
        try:
            rt.set_weight(params["endpoint"], weight)
        except KeyError as exc:
            raise ControlError("not_found", str(exc.args[0])) from None
        log.info(
            "route %s endpoint %s weight %d by %s",
            rt.name,
            params.get("endpoint"),
            weight,
            _who(caller),
        )
        return {
            "route": rt.name,
            "weights": {e.name: rt.endpoint_weight(e.name) for e in rt.cfg.endpoints},
        }

    async def h_strategy(params: dict[str, Any], caller: Caller) -> Any:
        rt = _route(d, params["route"])
        strategy = StrategyName(params["strategy"])
        rt.set_strategy(strategy)
        log.info("route %s strategy %s by %s", rt.name, strategy.value, _who(caller))
        return {"route": rt.name, "strategy": strategy.value}

    def _overrides() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for rt in d.routes.values():
            if rt.strategy_override is not None:
                out.append(
                    {
                        "route": rt.name,
                        "kind": "strategy",
                        "endpoint": None,
                        "value": rt.strategy_override.value,
                        "configured": rt.cfg.strategy.value,
                    }
                )
            for e in rt.cfg.endpoints:
                if e.name in rt.weights:
                    out.append(
                        {
                            "route": rt.name,
                            "kind": "weight",
                            "endpoint": e.name,
                            "value": rt.weights[e.name],
                            "configured": e.weight,
                        }
                    )
        return out

    async def h_overrides(params: dict[str, Any], caller: Caller) -> Any:
        return {"overrides": _overrides()}

    async def h_reset(params: dict[str, Any], caller: Caller) -> Any:
        rt = _route(d, params["route"])
        what = params.get("what") or "all"
        endpoint = params.get("endpoint")
        reset: list[str] = []
        if what in ("strategy", "all") and rt.strategy_override is not None:
            rt.reset_strategy()
            reset.append("strategy")
        if what in ("weight", "all"):
            try:
                reset += [f"weight {name}" for name in rt.reset_weight(endpoint)]
            except KeyError as exc:
                raise ControlError("not_found", str(exc.args[0])) from None
        log.info("route %s overrides reset (%s) by %s", rt.name, ", ".join(reset), _who(caller))
        return {
            "route": rt.name,
            "reset": reset,
            "strategy": rt.balancer.strategy.value,
            "weights": {e.name: rt.endpoint_weight(e.name) for e in rt.cfg.endpoints},
        }

    async def h_routes(params: dict[str, Any], caller: Caller) -> Any:
        return [
            {
                "name": rt.name,
                "strategy": rt.balancer.strategy.value,
                "strategy_override": rt.strategy_override is not None,
                "adaptive": adaptive_doc(rt),
                "endpoints": [
                    {
                        "name": e.name,
                        "url": mask_url(e.url),
                        "weight": rt.endpoint_weight(e.name),
                        "configured_weight": e.weight,
                    }
                    for e in rt.cfg.endpoints
                ],
                "balancer": _plain(rt.balancer.statistics()),
                "rebalancer": _plain(rt.rebalancer.statistics()),
                "no_candidate_events": rt.no_candidate_events,
                "fail_open_events": rt.fail_open_events,
                "subscriptions": rt.hub.subscriptions_view() if rt.hub else [],
            }
            for rt in d.routes.values()
        ]

    async def h_plan(params: dict[str, Any], caller: Caller) -> Any:
        return _rebalance(params, caller, dry=True)

    async def h_apply(params: dict[str, Any], caller: Caller) -> Any:
        return _rebalance(params, caller, dry=False)

    def _rebalance(params: dict[str, Any], caller: Caller, *, dry: bool) -> Any:
        only = params.get("route")
        now = time.monotonic()
        plan = []
        for rt in d.routes.values():
            if only not in (None, rt.name):
                continue
            for mv in rt.plan_rebalance(now, dry_run=dry, force=True):
                plan.append({"route": rt.name, **dataclasses.asdict(mv)})
        if not dry:
            log.info("rebalance by %s: %d move(s)", _who(caller), len(plan))
        return {"dry_run": dry, "moves": plan}

    one_route = Schema(route=string())
    return {
        "connections.drain": Handler(
            h_drain, mutating=True, params=Schema(id=string(required=True))
        ),
        "routes": Handler(h_routes, params=NO_PARAMS),
        "routes.weight": Handler(
            h_weight,
            mutating=True,
            params=Schema(
                route=string(required=True),
                endpoint=string(required=True),
                weight=integer(0, MAX_WEIGHT, required=True),
            ),
        ),
        "routes.strategy": Handler(
            h_strategy,
            mutating=True,
            params=Schema(
                route=string(required=True),
                strategy=string(required=True, choices=tuple(s.value for s in StrategyName)),
            ),
        ),
        "routes.overrides": Handler(h_overrides, params=NO_PARAMS),
        "routes.reset": Handler(
            h_reset,
            mutating=True,
            params=Schema(
                route=string(required=True),
                what=string(choices=("strategy", "weight", "all")),
                endpoint=string(),
            ),
        ),
        "rebalance.plan": Handler(h_plan, params=one_route),
        "rebalance.apply": Handler(h_apply, mutating=True, params=one_route),
    }
