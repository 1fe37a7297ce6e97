"""Cluster data plane (``share = "cluster"``): what following costs, and failover gaps.

Three daemons on one real nats-server and one Bitfinex-speaking feed process
(:func:`bench.procs.feed_main`) that pushes stamped ticker frames on every channel
subscribed to it and logs when each subscribe arrives. ``K`` raw clients per node (a
receiver process per node) subscribe to the same ticker, the first node's first, so it
owns the key; the other two follow it over NATS.

* **Exchange subscriptions**: the feed's subscribed channels (goal: 1 for the cluster).
* **Delivery latency**: one-way, from the stamp the feed puts in the frame to its arrival
  at a client, per node, at a fixed feed rate (1k and 10k msg/s). A non-owner's p50 minus
  the owner's is what following adds (goal: <= 500 µs).
* **Baseline**: the NATS hop alone, measured in the same run at the same rates: a nats-py
  publisher here, nats-server, a nats-py subscriber in another process, the same stamped
  frames. A non-owner cannot add less than this hop; what it adds above it is wsgate's.
* **Repeats**: each rate runs ``reps`` times (3; 1 in ``--quick``), interleaved; figures
  are medians, the added p50 also shows its min..max. The goal is ``met`` only when every
  repeat meets it, ``MISSED`` when none does, ``within spread`` otherwise.
* **CPU per delivery**: user + system time of each daemon during the push, over what its
  clients received (and over the frames pushed: the per-frame cost of its path).
* **Failover**: the owner is killed (SIGKILL) while the feed pushes 200 msg/s; the gap is
  the time from the kill to the new owner's subscribe at the feed (goal: every one <=
  lease_ttl + 1 s) and the longest silence any client on a surviving node saw. The
  killed node is restarted (it rejoins as a follower) before the next run.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing.connection
import os
import signal
import statistics
import time
from array import array
from typing import Any

from bench.daemon import cpu_seconds
from bench.net import TS_BASE, percentiles, ticker_frame
from bench.procs import Child, _pace, feed_main, recv_main
from tests.cluster.rig import NatsServer, Nodes, shared_route
from tests.e2e.harness import DaemonProc, wait_until

__all__ = ["run"]

LEASE_TTL = 3.0
ADDED_P50_GOAL_US = 500.0
SUBSCRIBE = b'{"event":"subscribe","channel":"ticker","symbol":"tBTCUSD"}'
FAILOVER_RATE = 200.0


def _body(nats_url: str, feed_port: int) -> str:
    return shared_route(
        nats_url,
        "bench",
        route="bfx",
        dialect="bitfinex",
        url=f"ws://127.0.0.1:{feed_port}",
        lease_ttl=LEASE_TTL,
    )


def _share(d: DaemonProc) -> dict[str, Any]:
    r = d.cli("status", "--json", "--socket", d.socket)
    if r.returncode != 0:
        return {}
    (route,) = json.loads(r.stdout)["routes"]
    return dict(route.get("cluster_share") or {})


def _receivers(d: DaemonProc, k: int) -> Child:
    recv = Child(recv_main, d.port, "/bfx", k, SUBSCRIBE, b'"subscribed"', False, False)
    recv.expect("ready", 60)
    return recv


def _refresh(nodes: list[DaemonProc], recvs: list[Child], k: int) -> None:
    """Fresh receivers on every node, each opened before the old one closes (the key
    never loses its sessions, so ownership stays put). The raw clients answer no pings,
    so the gateway drops them after ping_interval + ping_timeout (40 s): no cell may
    use a receiver longer than that."""
    for i, d in enumerate(nodes):
        fresh = _receivers(d, k)
        recvs[i].close()
        recvs[i] = fresh


def _measure(
    feed: Child, recvs: list[Child], rate: float, seconds: float, pids: list[int]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[float]]:
    """One push at ``rate`` for ``seconds``, every receiver measuring; CPU per pid."""
    for r in recvs:
        r.ask("measure", seconds + 5.0, 1.5, 1, None, reply="started")
    cpu0 = [cpu_seconds(p) for p in pids]
    pushed = feed.ask(
        "push", rate, seconds, int(rate * seconds) + 1, reply="pushed", timeout=seconds + 60
    )
    results = [r.expect("result", seconds + 60) for r in recvs]
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    return pushed, results, cpu


def _latency(res: dict[str, Any]) -> tuple[float, float]:
    samples: array[int] = array("q")
    samples.frombytes(res["samples"])
    p50, p99 = percentiles(samples, (50, 99))
    return p50, p99


def _delay_once(
    feed: Child, nodes: list[DaemonProc], recvs: list[Child], k: int, rate: float, seconds: float
) -> dict[str, Any]:
    pids = [d.proc.pid for d in nodes]
    _measure(feed, recvs, rate, 0.5, pids)  # warm-up, discarded
    pushed, results, cpu = _measure(feed, recvs, rate, seconds, pids)
    rows = []
    for i, (res, c) in enumerate(zip(results, cpu, strict=True)):
        p50, p99 = _latency(res)
        rows.append(
            {
                "node": "owner" if i == 0 else f"non-owner {i}",
                "p50_us": p50,
                "p99_us": p99,
                "delivered": res["count"],
                "lost": max(0, pushed["sent"] * k - res["count"]),
                "cpu_us_per_delivery": 1e6 * c / res["count"] if res["count"] else None,
                "cpu_us_per_frame": 1e6 * c / pushed["sent"] if pushed["sent"] else None,
            }
        )
    owner = rows[0]
    for row in rows[1:]:
        row["added_p50_us"] = row["p50_us"] - owner["p50_us"]
        row["added_p99_us"] = row["p99_us"] - owner["p99_us"]
        oc, fc = owner["cpu_us_per_delivery"], row["cpu_us_per_delivery"]
        row["cpu_vs_owner"] = fc / oc if oc and fc else None
    return {"sent": pushed["sent"], "seconds": pushed["seconds"], "rows": rows}


def _med(values: list[Any]) -> dict[str, float | None]:
    vals = sorted(v for v in values if v is not None and v == v)
    if not vals:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1]}


def _summary(
    rate: float, cells: list[dict[str, Any]], hops: list[dict[str, float]]
) -> dict[str, Any]:
    """Per node, the median of each figure over the repeats, with the added p50's range."""
    rows = []
    for i, first in enumerate(cells[0]["rows"]):
        rs = [c["rows"][i] for c in cells]
        row: dict[str, Any] = {"node": first["node"], "lost": sum(r["lost"] for r in rs)}
        for key in ("p50_us", "p99_us", "cpu_us_per_delivery", "cpu_us_per_frame"):
            row[key] = _med([r[key] for r in rs])["median"]
        if i:
            for key in ("added_p50_us", "added_p99_us", "cpu_vs_owner"):
                row[key] = _med([r[key] for r in rs])["median"]
            row["added_p50_spread"] = _med([r["added_p50_us"] for r in rs])
        rows.append(row)
    added = [r["added_p50_us"] for c in cells for r in c["rows"][1:]]
    verdict = (
        "met"
        if all(a <= ADDED_P50_GOAL_US for a in added)
        else "MISSED"
        if all(a > ADDED_P50_GOAL_US for a in added)
        else "within spread"
    )
    sent = sum(c["sent"] for c in cells)
    return {
        "rate": rate,
        "reps": len(cells),
        "sent_per_s": sent / sum(c["seconds"] for c in cells),
        "rows": rows,
        "nats_hop_p50_us": _med([h["p50_us"] for h in hops])["median"],
        "nats_hop_p99_us": _med([h["p99_us"] for h in hops])["median"],
        "verdict": verdict,
        "goal_met": verdict == "met",
    }


# ---------------------------------------------------------------- the NATS hop alone
def hop_main(conn: multiprocessing.connection.Connection, url: str) -> None:
    """Baseline child: a nats-py subscriber that stamps the arrival of each message."""
    asyncio.run(_hop_sub(conn, url))


async def _hop_sub(conn: multiprocessing.connection.Connection, url: str) -> None:
    import nats

    nc = await nats.connect(url)
    got: list[array[int]] = [array("q")]

    async def on_msg(msg: Any) -> None:
        data = msg.data
        p = data.find(b"]]")
        got[0].append(time.monotonic_ns() - (int(data[p - 20 : p]) - TS_BASE))

    await nc.subscribe("bench.hop", cb=on_msg)
    await nc.flush()
    conn.send(("ready", {}))
    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd[0] == "stop":
            break
        if cmd[0] == "take":  # the samples so far, and start again
            conn.send(("samples", got[0].tobytes()))
            got[0] = array("q")
    await nc.close()


async def _hop_push(url: str, rate: float, seconds: float) -> int:
    import nats

    nc = await nats.connect(url)
    sent = await _pace(
        rate, seconds, int(rate * seconds) + 1, lambda: nc.publish("bench.hop", ticker_frame(0))
    )
    await nc.flush()
    await nc.close()
    return sent


def _hop(url: str, hop: Child, rate: float, seconds: float) -> dict[str, float]:
    """Publisher here, subscriber in ``hop``: what one nats-py hop costs on this box now."""
    asyncio.run(_hop_push(url, 1000.0, 0.3))  # warm-up
    hop.ask("take", reply="samples")
    sent = asyncio.run(_hop_push(url, rate, seconds))
    samples: array[int] = array("q")
    deadline = time.monotonic() + 10
    while len(samples) < sent and time.monotonic() < deadline:
        samples.frombytes(hop.ask("take", reply="samples"))
        time.sleep(0.05)
    p50, p99 = percentiles(samples, (50, 99))
    return {"p50_us": p50, "p99_us": p99, "received": len(samples), "sent": sent}


def _owner(nodes: list[DaemonProc]) -> int:
    found: list[int] = []

    shares: list[dict[str, Any]] = []

    def one() -> bool:
        shares[:] = [_share(d) for d in nodes]
        found[:] = [i for i, s in enumerate(shares) if s.get("owned") == 1]
        return len(found) == 1

    try:
        wait_until(one, 20, "exactly one owner")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {shares}") from None
    return found[0]


def _failover(
    feed: Child,
    nats_url: str,
    feed_port: int,
    cluster: Nodes,
    nodes: list[DaemonProc],
    recvs: list[Child],
    k: int,
) -> dict[str, Any]:
    """Kill the owner during a push; restart it afterwards. Times from the feed's clock."""
    _refresh(nodes, recvs, k)
    o = _owner(nodes)
    before = len(feed.ask("subscribed_at", reply="subscribed_at"))
    survivors = [r for i, r in enumerate(recvs) if i != o]
    push_s = LEASE_TTL + 4.0
    for r in survivors:
        r.ask("measure", push_s + 1.0, push_s + 30.0, 1, None, reply="started")
    feed.conn.send(("push", FAILOVER_RATE, push_s, 10**9))
    time.sleep(1.0)  # steady delivery before the kill (the push is already running)
    killed = time.monotonic()
    nodes[o].proc.send_signal(signal.SIGKILL)
    nodes[o].proc.wait(10)
    feed.expect("pushed", push_s + 60)
    results = [r.expect("result", push_s + 60) for r in survivors]
    subs = feed.ask("subscribed_at", reply="subscribed_at")
    new = [t for t in subs[before:] if t > killed]
    out = {
        "subscribe_s": new[0] - killed if new else None,
        "new_subscriptions": len(subs) - before,
        "max_silence_s": max(r["max_silence_ns"] for r in results) / 1e9,
        "live_subscriptions": feed.ask("targets", reply="targets"),
        "closed_survivor_sessions": sum(r["closed"] for r in results),
    }
    # Restart the killed node in its own directory; its clients come back as followers.
    recvs[o].close()
    # The same node id: a restarted node, not a new one.
    nodes[o] = cluster.start_in(nodes[o].dir, f"n{o}", _body(nats_url, feed_port))
    recvs[o] = _receivers(nodes[o], k)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    k = 10
    seconds = 3.0 if quick else 10.0
    runs = 3 if quick else 10
    reps = 1 if quick else 3
    rates = (1000.0, 10000.0)
    load0 = os.getloadavg()
    with NatsServer() as nats, Child(feed_main, "bitfinex", False) as feed, Nodes() as cluster:
        port = feed.expect("ready")["port"]
        nodes = [cluster.start(f"n{i}", _body(nats.url, port)) for i in range(3)]
        recvs: list[Child] = []
        try:
            recvs.append(_receivers(nodes[0], k))  # the first node with sessions owns the key
            wait_until(lambda: _share(nodes[0]).get("owned") == 1, 20, "node 0 to own the key")
            recvs += [_receivers(d, k) for d in nodes[1:]]
            wait_until(
                lambda: all(_share(d).get("followed") == 1 for d in nodes[1:]),
                20,
                "nodes 1 and 2 to follow",
            )
            subscriptions = feed.ask("targets", reply="targets")
            cells: dict[float, list[dict[str, Any]]] = {r: [] for r in rates}
            hops: dict[float, list[dict[str, float]]] = {r: [] for r in rates}
            with Child(hop_main, nats.url) as hop:
                hop.expect("ready", 30)
                for _ in range(reps):  # interleaved, so a busy minute hits every cell
                    for rate in rates:
                        _refresh(nodes, recvs, k)
                        o = _owner(nodes)  # rows: the owner first, then the others
                        order = [o, *(i for i in range(len(nodes)) if i != o)]
                        ns, rs = [nodes[i] for i in order], [recvs[i] for i in order]
                        cells[rate].append(_delay_once(feed, ns, rs, k, rate, seconds))
                        hops[rate].append(_hop(nats.url, hop, rate, seconds))
            delays = [_summary(r, cells[r], hops[r]) for r in rates]
            gaps = [_failover(feed, nats.url, port, cluster, nodes, recvs, k) for _ in range(runs)]
        finally:
            for r in recvs:
                r.close()
    goal = LEASE_TTL + 1.0
    sub_s = [g["subscribe_s"] for g in gaps]
    return {
        "name": "cluster_share",
        "nodes": 3,
        "k": k,
        "seconds": seconds,
        "lease_ttl": LEASE_TTL,
        "loadavg": [load0, os.getloadavg()],
        "exchange_subscriptions": subscriptions,
        "delay": delays,
        "added_p50_goal_us": ADDED_P50_GOAL_US,
        "failover": gaps,
        "failover_s": sub_s,
        "failover_median_s": statistics.median([s for s in sub_s if s is not None] or [0.0]),
        "failover_goal_s": goal,
        "failover_goal_met": all(s is not None and s <= goal for s in sub_s),
        "one_new_subscription_each": all(g["new_subscriptions"] == 1 for g in gaps),
    }
