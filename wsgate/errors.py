"""The one exception tree of wsgate.

::

    WsgateError
     ├── ConfigError            a config file is invalid; carries every problem found
     ├── ControlError           a control-plane request failed; carries a stable code
     │    ├── DaemonNotRunning  no daemon answers on the control socket (CLI exit 3)
     │    └── PermissionDenied  the caller may not run this command (CLI exit 4)
     ├── BindError              a listener cannot bind its configured address (startup fails)
     ├── CapacityError          a configured limit (connections, sessions, channels) is reached
     ├── NoCandidateError       the balancer found no eligible upstream connection
     ├── UpstreamError          an upstream connection is not open (send, start_soon)
     ├── ProtocolError          a peer sent a frame the dialect cannot accept
     │    └── InvalidPath       a downstream request path/query names no valid stream (HTTP 4xx)
     ├── DeliveryError          a notification channel did not accept a notification
     ├── AlertError             an alert operation named an unknown alert or an invalid silence
 └── ClusterError           the cluster engine is unreachable or refused an operation
      ├── KeyConflict       a KV create/update lost the race (key exists / revision moved)
      ├── NoResponders      nobody listens on a request's subject (that node is gone)
      └── NodeIdTaken       another live node already holds this daemon.node_id
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AlertError",
    "BindError",
    "CapacityError",
    "ClusterError",
    "ConfigError",
    "ConfigProblem",
    "ControlError",
    "DaemonNotRunning",
    "DeliveryError",
    "InvalidPath",
    "KeyConflict",
    "NoCandidateError",
    "NoResponders",
    "NodeIdTaken",
    "PermissionDenied",
    "ProtocolError",
    "UpstreamError",
    "WsgateError",
]


class WsgateError(Exception):
    """Base class of every error wsgate raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file: where it is, what is wrong, how to fix it."""

    path: str  # dotted key path, e.g. "routes.bitfinex.endpoints[1].url"
    message: str
    line: int | None = None
    hint: str | None = None

    def render(self, filename: str | None = None) -> str:
        where = f"{filename}:" if filename else ""
        where += f"{self.line}: " if self.line is not None else (" " if filename else "")
        # A problem with the file itself has no key path to show.
        text = (
            f"{where}{self.message}"
            if self.path == "<file>"
            else f"{where}{self.path}: {self.message}"
        )
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "message": self.message, "line": self.line, "hint": self.hint}


class ConfigError(WsgateError):
    """A config file failed validation. ``problems`` lists every problem, not only the first."""

    def __init__(self, problems: list[ConfigProblem], filename: str | None = None) -> None:
        self.problems = list(problems)
        self.filename = filename
        lines = [p.render(filename) for p in self.problems]
        super().__init__(f"{len(lines)} config error(s):\n" + "\n".join(lines))


class ControlError(WsgateError):
    """A control-plane request failed. ``code`` is stable and maps to a CLI exit code."""

    def __init__(self, code: str, message: str, details: object = None) -> None:
        self.code = code
        self.message = message
        self.details = details
        super().__init__(f"{code}: {message}")


class DaemonNotRunning(ControlError):
    def __init__(self, socket_path: str, reason: str = "") -> None:
        msg = f"no wsgate daemon answers on {socket_path}"
        if reason:
            msg += f" ({reason})"
        msg += "; start it with `wsgate run` or point to it with --socket / $WSGATE_SOCKET"
        super().__init__("daemon_not_running", msg)
        self.socket_path = socket_path


class PermissionDenied(ControlError):
    def __init__(self, message: str) -> None:
        super().__init__("permission_denied", message)


class BindError(WsgateError):
    """A listener could not bind: names the config key, the address and the reason."""

    def __init__(self, key: str, address: str, reason: str, hint: str = "") -> None:
        self.key = key
        self.address = address
        text = f"cannot listen on {address} ({key}): {reason}"
        super().__init__(text + (f"; {hint}" if hint else ""))


class CapacityError(WsgateError):
    """A configured limit is reached; the message names the limit and the config key."""


class NoCandidateError(WsgateError):
    """No upstream connection is eligible for a placement."""


class UpstreamError(WsgateError):
    """An upstream connection is not open: a send or a task for it cannot be accepted.

    Failures *of* an upstream connection (handshake refused, silence, drops) are not
    raised: the connection's own loop classifies them and reconnects (``core.backoff``).
    """


class ProtocolError(WsgateError):
    """A frame that the dialect cannot accept; ``close_code`` says how to close the peer."""

    def __init__(self, message: str, close_code: int = 1008) -> None:
        self.close_code = close_code
        super().__init__(message)


class InvalidPath(ProtocolError):
    """A downstream client asked for a path or query the dialect cannot serve.

    The gateway answers the WebSocket handshake with ``http_status`` (404 unknown path,
    400 malformed stream list) instead of opening a session.
    """

    def __init__(self, message: str, http_status: int = 404) -> None:
        self.http_status = http_status
        super().__init__(message, close_code=1008)


class DeliveryError(WsgateError):
    """A notification channel refused or failed a delivery."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class AlertError(WsgateError):
    """An alert operation was refused: unknown fingerprint, invalid silence or matcher.

    ``candidates`` lists the alerts an ambiguous fingerprint prefix matched (each a short
    description), so the caller can show them; empty otherwise.
    """

    def __init__(self, message: str, *, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


class ClusterError(WsgateError):
    """The cluster engine is unreachable, timed out, or refused an operation."""


class KeyConflict(ClusterError):
    """A KV create found the key present, or an update found another revision."""


class NoResponders(ClusterError):
    """Nobody listens on a request's subject: the node that would answer is gone."""


class NodeIdTaken(ClusterError):
    """Another live node holds this ``daemon.node_id``; the message names the holder."""
