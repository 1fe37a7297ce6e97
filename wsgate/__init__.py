"""wsgate: a local WebSocket gateway daemon for crypto trading bots.

The in-process API is :class:`wsgate.Gateway` (imported lazily so the CLI stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsgate.version import __version__

__all__ = ["Gateway", "__version__"]

if TYPE_CHECKING:
    from wsgate.embed import Gateway


def __getattr__(name: str) -> Any:
    if name == "Gateway":
        from wsgate.embed import Gateway

        return Gateway
    raise AttributeError(f"module 'wsgate' has no attribute {name!r}")
