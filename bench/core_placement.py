"""Cost and quality of placement decisions (wsgate.core.balancer).

Two measurements:

* **speed** -- decisions per second and microseconds per decision for every strategy
  on pools of 10, 100 and 1000 candidates (about 5% ineligible, 5% unhealthy, 5%
  full, varied weights/latencies/loads; slow start over). The candidate list is
  fixed while timing, so this is the decision itself, not the caller's snapshot.
* **herd** -- 1000 subscriptions arriving within one simulated second onto 10
  connections, one of them 5x slower. After each pick the chosen connection's
  subscription count goes up by one (immediate accounting), latencies stay as they
  were (the balancer sees no new RTT sample within a second). Reports the max/mean
  load ratio and the slow connection's share. ``naive_fastest`` (always the lowest
  latency) is included as the herding baseline to beat.

Run ``python -m bench.core_placement`` (``--quick`` for a short run, ``--json`` for
the raw dict). Timing numbers depend on the machine and its load.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from typing import Any

from wsgate.core.balancer import Balancer, Candidate
from wsgate.core.types import StrategyName

__all__ = ["run"]

SIZES = (10, 100, 1000)
GOAL_US_AT_100 = 20.0


def _pool(n: int, rng: random.Random) -> list[Candidate]:
    out = []
    for i in range(n):
        roll = rng.random()
        capacity = 25 if roll < 0.05 else 0
        out.append(
            Candidate(
                id=f"conn-{i:04d}",
                weight=rng.choice((1.0, 1.0, 2.0, 3.0)),
                sessions=rng.randrange(3),
                subscriptions=25 if capacity else rng.randrange(25),
                capacity=capacity,
                message_rate=rng.uniform(0.0, 400.0),
                latency=None if rng.random() < 0.05 else rng.uniform(0.005, 0.050),
                health=30.0 if 0.05 <= roll < 0.10 else rng.uniform(60.0, 100.0),
                eligible=not (0.10 <= roll < 0.15),
                connected_at=-1000.0,
                error_penalty=rng.uniform(0.0, 0.5),
            )
        )
    return out


def _time_picks(strategy: StrategyName, cands: list[Candidate], picks: int, repeats: int) -> float:
    """Best-of-``repeats`` seconds per decision."""
    best = float("inf")
    for r in range(repeats):
        b = Balancer(strategy, random.Random(r))
        pick = b.pick
        t0 = time.perf_counter()
        for k in range(picks):
            pick(cands, k * 1e-3)
        best = min(best, (time.perf_counter() - t0) / picks)
    return best


def _speed(quick: bool) -> dict[str, dict[str, dict[str, float]]]:
    rng = random.Random(2024)
    repeats = 3 if quick else 5
    out: dict[str, dict[str, dict[str, float]]] = {}
    for n in SIZES:
        cands = _pool(n, rng)
        picks = max(200, (20_000 if not quick else 3_000) * 10 // n)
        out[str(n)] = {}
        for s in StrategyName:
            sec = _time_picks(s, cands, picks, repeats)
            out[str(n)][s.value] = {"us_per_decision": sec * 1e6, "decisions_per_s": 1.0 / sec}
    return out


def _anchor_us(n: int = 100, repeats: int = 5) -> float:
    """Machine-speed anchor: a bare Python loop reading one attribute of n candidates."""
    cands = _pool(n, random.Random(0))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(1000):
            for c in cands:
                if c.health < 0.0:
                    break
        best = min(best, (time.perf_counter() - t0) / 1000)
    return best * 1e6


def _herd_pool() -> list[Candidate]:
    return [
        Candidate(id=f"conn-{i}", latency=0.050 if i == 0 else 0.010, connected_at=-1000.0)
        for i in range(10)
    ]


def _herd(strategy: StrategyName | None, seed: int = 1) -> dict[str, float]:
    cands = _herd_pool()
    index = {c.id: i for i, c in enumerate(cands)}
    b = Balancer(strategy or StrategyName.ROUND_ROBIN, random.Random(seed))
    for k in range(1000):
        now = k / 1000.0  # all within one simulated second
        if strategy is None:  # baseline: global argmin latency, no load term
            cid = min(cands, key=lambda c: c.latency or 0.0).id
        else:
            cid = b.pick(cands, now).candidate_id
        i = index[cid]
        cands[i] = dataclasses.replace(cands[i], subscriptions=cands[i].subscriptions + 1)
    counts = [c.subscriptions for c in cands]
    return {
        "max_mean_ratio": max(counts) / (sum(counts) / len(counts)),
        "slow_share": counts[0] / sum(counts),
        "max": float(max(counts)),
        "min": float(min(counts)),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure placement speed per strategy and pool size, and herding under a burst."""
    speed = _speed(quick)
    herd = {s.value: _herd(s) for s in StrategyName}
    herd["naive_fastest"] = _herd(None)
    at100 = speed["100"]
    return {
        "python": sys.version.split()[0],
        "quick": quick,
        "speed": speed,
        "herd": herd,
        "goal_us_at_100": GOAL_US_AT_100,
        "anchor_bare_loop_us_at_100": _anchor_us(),
        "over_goal_at_100": sorted(
            s for s, v in at100.items() if v["us_per_decision"] > GOAL_US_AT_100
        ),
    }


def _table(res: dict[str, Any]) -> str:
    lines = [f"placement decisions, python {res['python']} (us/decision | decisions/s)"]
    header = f"{'strategy':<22}" + "".join(f"{'n=' + n:>22}" for n in res["speed"])
    lines.append(header)
    for s in StrategyName:
        row = f"{s.value:<22}"
        for n in res["speed"]:
            v = res["speed"][n][s.value]
            row += f"{v['us_per_decision']:>10.2f} | {v['decisions_per_s']:>9,.0f}"
        lines.append(row)
    lines.append("")
    lines.append("herd: 1000 subscriptions in 1 simulated second, 10 connections, conn-0 at 5x RTT")
    lines.append(f"{'strategy':<22}{'max/mean':>10}{'slow share':>12}{'min..max':>12}")
    for name, h in res["herd"].items():
        lines.append(
            f"{name:<22}{h['max_mean_ratio']:>10.2f}{h['slow_share']:>12.1%}"
            f"{int(h['min']):>6}..{int(h['max']):<5}"
        )
    over = res["over_goal_at_100"]
    lines.append("")
    anchor = res["anchor_bare_loop_us_at_100"]
    lines.append(f"machine anchor: bare loop over 100 candidates = {anchor:.2f} us")
    lines.append(
        f"goal < {res['goal_us_at_100']:.0f} us/decision at 100 candidates: "
        + ("met by every strategy" if not over else "missed by " + ", ".join(over))
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv[1:])
    if "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(_table(result))
