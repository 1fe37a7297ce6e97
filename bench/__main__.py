"""``python -m bench [--quick] [--only NAME ...]``: run the benchmark suite.

Prints a table and writes ``bench/results/latest.json``. Every wsgate figure is a
ratio against a baseline measured in the same run (see docs/BENCHMARKS.md).
Scenarios: core, cli, recovery, relay, scale, fanout (which also runs the daemon on
uvloop when it is installed; ``--only uvloop`` is an alias for it), cluster (ten nodes
on a real nats-server), cluster_share (three nodes, one subscription: a non-owner's
added delay and CPU at 1k and 10k msg/s, failover after kill -9), cluster_budget (a
connect slot from the cluster ledger: latency, and a burst of three nodes), cluster_idle
(lease watch entries per node for idle shared keys).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["main", "render"]

SCENARIOS = (
    "core",
    "cli",
    "recovery",
    "relay",
    "scale",
    "fanout",
    "analytics",
    "cluster",
    "cluster_share",
    "cluster_budget",
    "cluster_idle",
    "venues",
)
CORE_MODULES = ("core_placement", "core_metrics", "core_alerts", "core_locate")
ANALYTICS_NOTE = "not run (use --only analytics)"


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import PackageNotFoundError, version

    try:
        uv: str | None = version("uvloop")
    except PackageNotFoundError:
        uv = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "websockets": version("websockets"),
        "uvloop": uv,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def _core(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "core"}
    for mod in CORE_MODULES:
        try:
            m = importlib.import_module(f"bench.{mod}")
        except ImportError:
            out[mod] = {"skipped": "module not present"}
            continue
        out[mod] = m.run(quick)
    return out


def _run_one(name: str, quick: bool) -> dict[str, Any]:
    if name == "core":
        return _core(quick)
    if name == "analytics":
        from bench.fanout import run_analytics

        return run_analytics(quick)
    module = {"cli": "cli_wall"}.get(name, name)
    m = importlib.import_module(f"bench.{module}")
    result: dict[str, Any] = m.run(quick)
    return result


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt.format(x)


def _yes(b: Any) -> str:
    return "met" if b else "MISSED"


def _range(cell: dict[str, Any], key: str, fmt: str = "{:,.0f}") -> str:
    """`` [min..max]`` of a repeated cell's figure, empty for a single run."""
    sp = (cell.get("spread") or {}).get(key)
    if not sp or sp.get("min") is None or cell.get("runs", 1) < 2:
        return ""
    return f" [{fmt.format(sp['min'])}..{fmt.format(sp['max'])}]"


def render(res: dict[str, Any]) -> str:
    """The results as Markdown tables (also printed to the terminal)."""
    out: list[str] = []
    vn = res.get("venues")
    if vn and "rows" in vn:
        out += [
            "### Fan-out per venue dialect (K=100, aggTrade; saturation)",
            "",
            "| dialect | direct msg/s | wsgate msg/s | ratio | wsgate CPU µs/delivery | "
            "ratio vs binance | CPU vs binance | within 20% |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in vn["rows"]:
            out.append(
                f"| {row['dialect']} | {_f(row['direct']['saturation']['rate'], '{:,.0f}')} | "
                f"{_f(row['wsgate']['saturation']['rate'], '{:,.0f}')} | "
                f"{_f(row['rate_vs_direct'])}x | {_f(row['cpu_us_per_delivery'])} | "
                f"{_f(row['ratio_vs_binance'])} | {_f(row['cpu_vs_binance'])} | "
                f"{_yes(row['within_20_percent'])} |"
            )
        out.append("")
    fo = res.get("fanout")
    if fo and "rows" in fo:
        out += [
            "### Fan-out (aggregate deliveries/s at saturation; latency at 20k deliveries/s)",
            "",
            f"Median of {fo.get('reps', 1)} interleaved runs per cell, [min..max] in brackets; "
            "direct = a separate broadcaster process on the same feed and buffer policy; "
            "CPU = every server-side process of the side (feed + broadcaster or daemon).",
            "",
            "| K | direct msg/s | wsgate msg/s | ratio | direct p50/p99/p99.9 µs | "
            "wsgate p50/p99/p99.9 µs | p99 ratio | wsgate-uvloop rate / p99 ratio | "
            "wsgate CPU µs/delivery | direct CPU µs/delivery | lost |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in fo["rows"]:
            d, w = row["direct"], row["wsgate_asyncio"]
            r = row["wsgate_asyncio_vs_direct"]
            u = row.get("wsgate_uvloop_vs_direct") or {}
            lost = d["saturation"]["lost"] + w["saturation"]["lost"] + w["fixed"]["lost"]
            out.append(
                f"| {row['k']} | {_f(d['saturation']['rate'], '{:,.0f}')}{_range(d, 'rate')} | "
                f"{_f(w['saturation']['rate'], '{:,.0f}')}{_range(w, 'rate')} | "
                f"{_f(r['rate'])}x | "
                f"{_f(d['fixed']['p50_us'], '{:.0f}')}/{_f(d['fixed']['p99_us'], '{:.0f}')}/"
                f"{_f(d['fixed']['p999_us'], '{:.0f}')} | "
                f"{_f(w['fixed']['p50_us'], '{:.0f}')}/{_f(w['fixed']['p99_us'], '{:.0f}')}/"
                f"{_f(w['fixed']['p999_us'], '{:.0f}')} | {_f(r['p99'])}x | "
                f"{_f(u.get('rate'))}x / {_f(u.get('p99'))}x | "
                f"{_f(w['saturation'].get('server_cpu_us_per_delivery'))}"
                f"{_range(w, 'cpu_us_per_delivery', '{:.2f}')} | "
                f"{_f(d['saturation'].get('server_cpu_us_per_delivery'))}"
                f"{_range(d, 'cpu_us_per_delivery', '{:.2f}')} | {lost} |"
            )
        for g in fo["goals"]:
            out.append(
                f"- K={g['k']}: rate >= {g['rate_goal']}x "
                f"{g.get('rate_verdict') or _yes(g['rate_met'])}; "
                f"p99 <= {g['p99_goal']}x {g.get('p99_verdict') or _yes(g['p99_met'])}"
            )
        out.append("")
    rl = res.get("relay")
    if rl and "paths" in rl:
        out += [
            "### Relay (one raw session)",
            "",
            "Added µs = path minus direct in the same round, median over rounds (each "
            "round's figure in brackets); CPU µs = the relay process's CPU per frame.",
            "",
            "| path | msg/s at saturation | vs direct | p50 µs at 1k msg/s | p99 µs | "
            "added p50 µs | added p99 µs | orders: added p50 µs | added p99 µs | "
            "CPU µs/frame (push, orders) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]

        def rounds(values: list[float]) -> str:
            return " [" + ", ".join(f"{v:+.0f}" for v in values) + "]" if len(values) > 1 else ""

        for name, p in rl["paths"].items():
            out.append(
                f"| {name} | {_f(p['rate'], '{:,.0f}')} | {_f(p['rate_vs_direct'], '{:.2f}x')} | "
                f"{_f(p['p50_us'], '{:.0f}')} | {_f(p['p99_us'], '{:.0f}')} | "
                f"{_f(p['added_p50_us'], '{:+.0f}')}{rounds(p.get('added_p50_rounds', []))} | "
                f"{_f(p['added_p99_us'], '{:+.0f}')} | "
                f"{_f(p.get('added_order_p50_us'), '{:+.0f}')}"
                f"{rounds(p.get('added_order_p50_rounds', []))} | "
                f"{_f(p.get('added_order_p99_us'), '{:+.0f}')} | "
                f"{_f(p.get('cpu_us'), '{:.0f}')}, {_f(p.get('order_cpu_us'), '{:.0f}')} |"
            )
        out.append(f"- {rl.get('goal', 'wsgate added p50 <= 50 µs')}: {_yes(rl['goal_met'])}")
        for name in ("wsgate", "wsgate_uvloop"):
            g = rl.get(f"goal_{name}")
            if g:
                out.append(f"  - {name}: " + ", ".join(f"{k} {_yes(v)}" for k, v in g.items()))
        out.append("")
    sc = res.get("scale")
    if sc and "wsgate" in sc:
        w, p = sc["wsgate"], sc["websockets"]
        out += [
            f"### Scale ({sc['target']} idle sessions; fd hard limit {sc['nofile_hard']})",
            "",
            "| server | opened | RSS before→after MiB | KiB/session | handshakes/s |",
            "|---|---|---|---|---|",
        ]
        for name, x in (("wsgate", w), ("websockets", p)):
            out.append(
                f"| {name} | {x['opened']} | {x['rss_before_kib'] / 1024:.1f}→"
                f"{x['rss_after_kib'] / 1024:.1f} | {_f(x['kib_per_session'])} | "
                f"{_f(x['handshakes_per_s'], '{:,.0f}')} |"
            )
        out += [
            f"- ratio wsgate/websockets: {_f(sc['ratio_kib'])}x; <= 20 KiB/session: "
            f"{_yes(sc['goal_met'])}",
            f"- `wsgate status --json` wall time: {_f(w['status_wall_idle_s'], '{:.3f}')} s idle,"
            f" {_f(w['status_wall_s'], '{:.3f}')} s with the sessions attached",
            "",
        ]
    rc = res.get("recovery")
    if rc and "faults" in rc:
        out += [
            f"### Recovery (ticker cadence {rc['cadence_s']} s)",
            "",
            "| fault | detected after s | data again after detection s "
            "| data again after fault s |",
            "|---|---|---|---|",
        ]
        for name, f in rc["faults"].items():
            out.append(
                f"| {name} | {_f(f['detect_s'], '{:.3f}')} | "
                f"{_f(f['data_again_after_detect_s'], '{:.3f}')} | "
                f"{_f(f['data_again_after_fault_s'], '{:.3f}')} |"
            )
        out += [
            f"- stall detected within cadence + 1 s, data 1 s later: {_yes(rc['goal_met'])}",
            "",
        ]
    cl = res.get("cli")
    if cl and "median_s" in cl:
        m = cl["median_s"]
        out += [
            "### CLI",
            "",
            f"- median wall: `python -c pass` {m['python_pass'] * 1000:.0f} ms, bare stdlib "
            f"client {m['bare_client'] * 1000:.0f} ms, `wsgate status --json` "
            f"{m['wsgate_status'] * 1000:.0f} ms",
            f"- status / python -c pass = {cl['status_vs_python_pass']:.2f}x; status / bare "
            f"client = {cl['status_vs_bare_client']:.2f}x (goal <= 3x: {_yes(cl['goal_met'])})",
            "",
        ]
    co = res.get("core")
    if co:
        out += ["### Core", ""]
        for mod in CORE_MODULES:
            if mod in co:
                text = json.dumps(co[mod], default=str)
                out.append(f"- {mod}: {text[:600]}{'…' if len(text) > 600 else ''}")
        out.append("")
    an = res.get("analytics")
    if isinstance(an, dict) and "rate_on_vs_off" in an:
        out += [
            "### Analytics on vs off (fan-out K=100 at saturation, asyncio)",
            "",
            f"- per-message metrics on {an['on']['saturation']['rate']:,.0f} msg/s, off "
            f"{an['off']['saturation']['rate']:,.0f} msg/s (medians of {an.get('reps', 1)}): "
            f"cost {an['cost_percent']}% "
            f"(goal < 5%: {an.get('verdict') or _yes(an['goal_met'])})",
            "",
        ]
    else:
        out += [f"### Analytics on vs off\n\n- {an or ANALYTICS_NOTE}", ""]
    cs = res.get("cluster")
    if cs and "median_s" in cs:
        m = cs["median_s"]
        out += [
            f"### Cluster ({cs['nodes']} idle nodes on one nats-server, {cs['window_s']} s)",
            "",
            f"- idle node CPU: median {cs['idle_node_cpu_percent_median']:.2f}% of a core, max "
            f"{cs['idle_node_cpu_percent_max']:.2f}% (goal < {cs['cpu_goal_percent']:g}%: "
            f"{_yes(cs['cpu_goal_met'])}); the same daemon without a cluster "
            f"{cs['single_node_cpu_percent']:.2f}%; "
            f"nats-server {cs['nats_server_cpu_percent']:.2f}%",
            f"- `wsgate cluster nodes --json` {m['cluster_nodes_json'] * 1000:.0f} ms vs "
            f"`wsgate status --json` {m['status_json'] * 1000:.0f} ms: "
            f"{cs['cluster_nodes_vs_status']:.2f}x (goal <= {cs['wall_goal']:g}x: "
            f"{_yes(cs['wall_goal_met'])})",
            "",
        ]
    sh = res.get("cluster_share")
    if sh and "delay" in sh and "rows" in (sh["delay"] or [{}])[0]:
        out += _render_share(sh)
    cb = res.get("cluster_budget")
    if cb and "burst" in cb:
        from bench.cluster_budget import render as render_budget

        out += render_budget(cb)
    ci = res.get("cluster_idle")
    if ci and "rows" in ci:
        from bench.cluster_idle import render as render_idle

        out += render_idle(ci)
    for name, err in res.get("errors", {}).items():
        out.append(f"- {name} FAILED: {err.splitlines()[-1] if err else ''}")
    return "\n".join(out)


def _render_share(sh: dict[str, Any]) -> list[str]:
    load = ", ".join(f"{a[0]:.1f}" for a in sh["loadavg"])
    out = [
        f'### Cluster data plane ({sh["nodes"]} nodes, share = "cluster", K={sh["k"]} per '
        f"node, lease_ttl {sh['lease_ttl']:g} s; load average {load} at start/end)",
        "",
        f"The exchange saw {sh['exchange_subscriptions']} subscription(s) for the cluster. "
        f"Medians of {sh['delay'][0]['reps']} interleaved runs of {sh['seconds']:g} s per rate.",
        "",
        "| msg/s (sent/s) | node | p50 µs | p99 µs | added p50 µs [min..max] | added p99 µs | "
        "CPU µs/delivery | CPU vs owner | CPU µs/frame | lost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in sh["delay"]:
        for row in d["rows"]:
            sp = row.get("added_p50_spread") or {}
            rng = ""
            if d["reps"] > 1 and sp.get("min") is not None:
                rng = f" [{sp['min']:+.0f}..{sp['max']:+.0f}]"
            out.append(
                f"| {d['rate']:,.0f} ({_f(d['sent_per_s'], '{:,.0f}')}) | {row['node']} | "
                f"{_f(row['p50_us'], '{:.0f}')} | {_f(row['p99_us'], '{:.0f}')} | "
                f"{_f(row.get('added_p50_us'), '{:+.0f}')}{rng} | "
                f"{_f(row.get('added_p99_us'), '{:+.0f}')} | "
                f"{_f(row['cpu_us_per_delivery'])} | {_f(row.get('cpu_vs_owner'))} | "
                f"{_f(row['cpu_us_per_frame'], '{:.1f}')} | {row['lost']} |"
            )
        out.append(
            f"| {d['rate']:,.0f} | NATS hop alone (baseline) | "
            f"{_f(d['nats_hop_p50_us'], '{:.0f}')} | {_f(d['nats_hop_p99_us'], '{:.0f}')} | "
            "| | | | | |"
        )
    for d in sh["delay"]:
        added = [r["added_p50_us"] for r in d["rows"][1:]]
        hop = d["nats_hop_p50_us"]
        above = ", ".join(_f(a - hop, "{:+.0f}") for a in added) if hop is not None else "n/a"
        out.append(
            f"- {d['rate']:,.0f} msg/s: a non-owner adds p50 <= {sh['added_p50_goal_us']:g} µs: "
            f"{d['verdict']}; the NATS hop alone is {_f(hop, '{:.0f}')} µs p50, so wsgate's "
            f"own part of the added p50 is {above} µs"
        )
    subs = ", ".join(_f(g["subscribe_s"]) for g in sh["failover"])
    silence = ", ".join(_f(g["max_silence_s"]) for g in sh["failover"])
    out += [
        f"- failover after kill -9 of the owner ({len(sh['failover'])} runs): new owner's "
        f"subscribe after {subs} s (goal every one <= {sh['failover_goal_s']:g} s: "
        f"{_yes(sh['failover_goal_met'])}); longest silence at a surviving client {silence} s; "
        f"exactly one new subscription each time: {_yes(sh['one_new_subscription_each'])}",
        "",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer K values, shorter pushes")
    ap.add_argument("--only", action="append", choices=(*SCENARIOS, "uvloop"), metavar="NAME")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latest.json"))
    args = ap.parse_args(argv)
    names = [("fanout" if n == "uvloop" else n) for n in (args.only or SCENARIOS)]
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "machine": _machine(),
        "errors": {},
    }
    t0 = time.monotonic()
    for name in dict.fromkeys(names):
        t = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            res[name] = _run_one(name, args.quick)
        except Exception:
            res["errors"][name] = traceback.format_exc()
            print(res["errors"][name], file=sys.stderr)
        print(f"[bench] {name} done in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
    res["seconds"] = time.monotonic() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(render(res))
    print(f"\n{res['seconds']:.0f} s; results in {out}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
