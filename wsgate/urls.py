"""Building upstream URLs from an endpoint URL and a path/query to add to it.

An endpoint may carry its own path and query (``wss://host/ws?foo=1``); a relayed session
or a sharded pool adds a sub-path and a query of its own (``/ws/<listenKey>``,
``/stream?streams=...``). Pasting the strings together puts the second path after the
first query (``/ws?foo=1/stream``); :func:`join_url` merges each part where it belongs.

Pure string work: the query pairs are kept byte for byte, in order (endpoint first).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["join_url"]


def join_url(base: str, addition: str) -> str:
    """``base`` with ``addition`` (``/sub/path?query``) merged in.

    The path becomes the endpoint's path followed by the addition's (one ``/`` between
    them); the query becomes the endpoint's pairs followed by the addition's. An empty
    addition leaves ``base`` untouched. The caller has already removed the gateway's own
    credentials from the addition's query (:func:`wsgate.redact.strip_query_params`).
    """
    if not addition:
        return base
    sub_path, _, sub_query = addition.partition("?")
    parts = urlsplit(base)
    path = parts.path
    if sub_path:
        path = path.rstrip("/") + ("" if sub_path.startswith("/") else "/") + sub_path
    query = "&".join(q for q in (parts.query, sub_query) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))
