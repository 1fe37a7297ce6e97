"""NatsEngine.publish_nowait and send_now on a real nats-server. publish_nowait drives
nats-py's publish() coroutine in one step, send_now writes nats-py's pending list itself:
this fails loudly if a nats-py release makes that coroutine wait in the normal case (the
frames would be lost, counted as publish_dropped) or moves the internals send_now uses
(it would fall back to nats-py's flusher, one loop turn later: slower, still correct)."""

from __future__ import annotations

import asyncio

from tests.cluster.rig import NatsServer
from tests.e2e.harness import until
from wsgate.cluster.nats_engine import NatsEngine
from wsgate.config.schema import ClusterConfig


def test_publish_nowait_hands_every_message_over_in_order_without_waiting() -> None:
    with NatsServer() as nats:

        async def scenario() -> None:
            cfg = ClusterConfig(engine="nats", servers=(nats.url,), name="pn")
            pub, sub = NatsEngine(cfg, "pub"), NatsEngine(cfg, "sub")
            assert await pub.connect(5.0) and await sub.connect(5.0)
            got: list[bytes] = []

            async def on_msg(data: bytes) -> None:
                got.append(data)
                return None

            served = await sub.serve("pn.md.x", on_msg)

            async def probed() -> bool:  # the subscription reached the server
                await pub.publish("pn.md.x", b"probe")
                await asyncio.sleep(0.05)
                return bool(got)

            await until(probed, 10, "the subscription")
            sent = [b"%d" % i + b"x" * (i % 500) for i in range(2000)]
            for i in range(0, len(sent), 100):  # a turn's messages, then the turn's write
                assert all(pub.publish_nowait("pn.md.x", m) for m in sent[i : i + 100])
                assert pub._nc is not None and pub._nc.pending_data_size > 0
                pub.send_now()
                assert pub._nc.pending_data_size == 0  # written here, not in a later turn
            assert pub._suspended == 0 and pub.sent_now == len(sent) // 100
            frames = lambda: [m for m in got if m != b"probe"]  # noqa: E731
            await until(lambda: len(frames()) == len(sent), 10, "every message")
            assert frames() == sent
            await served.stop()
            await pub.close()
            assert not pub.publish_nowait("pn.md.x", b"late")  # no link: refused, not queued
            await sub.close()

        asyncio.run(asyncio.wait_for(scenario(), 30))
