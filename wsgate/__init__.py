"""wsgate: a local WebSocket gateway daemon for crypto trading bots."""

__version__ = "0.1.0"
__all__ = ["__version__"]
