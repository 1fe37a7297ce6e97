"""The ``raw`` dialect: an opaque 1:1 relay.

Nothing is parsed. Every session gets its own upstream connection (``shared = False``); the
first client frame and every later one are relayed as is, and every upstream frame goes back
to that one session unchanged. On upstream loss the hub closes the session with 1012/1013 so
the client reconnects (see DESIGN §3).
"""

from __future__ import annotations

from collections.abc import Sequence

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    ChannelData,
    DataKind,
    FrameForm,
    Integrity,
    Intent,
    Relay,
    SessionStatistics,
    StateStatistics,
    SubKey,
    Subscribe,
    UpstreamEvent,
)

__all__ = ["RawDialect", "RawSession", "RawState", "RawUpstream"]

_RAW_KEY = SubKey(DialectName.RAW, "raw", "", (), "raw")


class RawSession:
    """Relays client frames untouched; the path is passed to the upstream as is."""

    form = FrameForm.PLAIN
    fast_kinds = frozenset({DataKind.DATA})

    def __init__(self, path: str = "", query: str = "") -> None:
        self.path = path
        self.query = query
        self.messages = 0

    def __repr__(self) -> str:
        return f"<RawSession path={self.path!r} messages={self.messages}>"

    def greeting(self) -> list[str]:
        return []

    def on_open(self, now: float) -> list[Intent]:
        return []

    def on_client_message(self, text: str | bytes, now: float) -> list[Intent]:
        self.messages += 1
        frame = text if isinstance(text, str) else text.decode("utf-8", "replace")
        return [Relay(frame)]

    def subscriptions(self) -> list[SubKey]:
        return []

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(self.messages, 0, 0)

    def render_subscribed(self, sub: Subscribe, gateway_chan_id: int) -> str | None:
        return None

    def render_subscribe_error(self, sub: Subscribe, code: int, msg: str) -> str | None:
        return None

    def holds(self, key: SubKey) -> bool:
        return False  # every subscription is answered on its own

    def withdrawn(self) -> list[SubKey]:
        return []

    def render_unsubscribed(self, gateway_chan_id: int) -> str | None:
        return None

    def render(self, event: ChannelData, gateway_chan_id: int, now: float) -> bytes | None:
        return event.text.encode()


class RawUpstream:
    def __repr__(self) -> str:
        return "<RawUpstream>"

    def hello(self) -> list[str]:
        return []

    def subscribe_frame(self, key: SubKey, req_id: int) -> str:
        raise ValueError("raw routes have no subscriptions; relay client frames instead")

    def unsubscribe_frame(self, key: SubKey, channel: int | str, req_id: int) -> str:
        raise ValueError("raw routes have no subscriptions; relay client frames instead")

    def ping_frame(self, cid: int) -> str | None:
        return None  # an opaque protocol has no app-level ping; use WebSocket pings

    def on_upstream_frame(self, text: str) -> UpstreamEvent:
        return ChannelData("", DataKind.DATA, text, 0, len(text))


class RawState:
    """Raw routes keep no state: there are no late joiners on a dedicated upstream."""

    key = _RAW_KEY

    def __repr__(self) -> str:
        return "<RawState>"

    def apply(self, event: ChannelData) -> Integrity:
        return Integrity.OK

    def reset(self) -> None:
        return None

    def snapshot_event(self) -> ChannelData | None:
        return None

    def statistics(self) -> StateStatistics:
        return StateStatistics(self.key, 0, 0, 0, 0, False)


class RawDialect:
    name = DialectName.RAW
    shared = False
    url_suffix = ""

    def __repr__(self) -> str:
        return "<RawDialect>"

    def open_session(self, path: str, query: str = "") -> RawSession:
        return RawSession(path, query)

    def open_upstream(self, flags: int = 0) -> RawUpstream:
        return RawUpstream()

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int:
        return 0

    def new_state(self, key: SubKey) -> RawState:
        return RawState()

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes:
        return event.text.encode()

    def cadence(self, key: SubKey) -> float | None:
        return None

    def dedup_id(self, event: ChannelData) -> int | None:
        return None
