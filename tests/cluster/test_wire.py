"""The data plane's frame messages (wsgate.cluster.wire): a batch decodes to the frames it
carries, in order, with consecutive sequences; v1 still decodes; what a node cannot read
decodes to nothing, so it is ignored, never half-delivered."""

from __future__ import annotations

import json

from wsgate.cluster import wire
from wsgate.dialects import base as d


def ev(text: str, kind: d.DataKind = d.DataKind.DATA, ts: float | None = 1.5) -> d.ChannelData:
    return d.ChannelData(17, kind, text, 3, 4, ts)


def test_a_batch_carries_its_frames_in_order_with_consecutive_sequences() -> None:
    events = [
        ev('[17,[1,2,"é"]]'),
        ev('[17,"hb"]', d.DataKind.HEARTBEAT, None),
        ev("multi\nline \u20ac text"),  # a newline in a text is not the header's end
        ev(""),
    ]
    data = wire.encode_frames("ep1", 41, events)
    assert data.startswith(wire.V2)
    bodies = wire.decode(data)
    assert bodies == [
        ["ep1", 41 + i, e.channel, e.kind.value, e.text, e.start, e.end, e.ts]
        for i, e in enumerate(events)
    ]


def test_v1_frames_and_links_still_decode() -> None:
    one = wire.encode_v1("ep1", 7, ev("[1]"))
    assert wire.decode(one) == [["ep1", 7, 17, d.DataKind.DATA.value, "[1]", 3, 4, 1.5]]
    link = json.dumps(["ep2", 9, "ep1", 8]).encode()
    assert wire.decode(link) == [["ep2", 9, "ep1", 8]]


def test_unknown_or_broken_messages_decode_to_nothing() -> None:
    good = wire.encode_frames("ep1", 1, [ev("abc"), ev("def")])
    for bad in (
        b'W3 ["ep1",1,[]]\n',  # a later format
        b"",
        b"garbage",
        b"[1,2,3]",  # v1 of the wrong shape
        good[:-1],  # a text cut short
        good + b"x",  # bytes nobody accounts for
        good.replace(b"\n", b" ", 1),  # no header end
        b'W2 ["ep1",1,[[1,"data",0,0,null,-1]]]\n',
        b"W2 [1,1,[]]\n",  # the epoch is not a string
        b'W2 ["ep1",1,[[1,"data",0,0,null,2]]]\n\xff\xfe',  # not UTF-8
    ):
        assert wire.decode(bad) is None, bad
    assert wire.version_of(b"W3 [...]") == "W3"
    assert wire.version_of(b"[1]") == "v1"
