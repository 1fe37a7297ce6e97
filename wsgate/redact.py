"""Masking credentials in anything wsgate logs or publishes.

Three layers, from precise to blunt:

* :func:`mask_url` for every URL that reaches a log line, an event, ``status`` or
  ``connections``: userinfo, the values of credential-like query parameters (``token``,
  ``key``, ``secret``, ``signature``, ``listenKey``, ... matched by name) and opaque
  key-like path segments (20+ letters and digits, the shape of a Binance listenKey)
  become ``***``.
* :func:`strip_query_params` removes the gateway's own credential (``?token=``) from a
  bot's query before anything is forwarded upstream: the gateway consumed it.
* :class:`RedactingFormatter` is the last line: every formatted log record (traceback
  included) has URLs masked and the configured secret values (:func:`set_secrets`)
  replaced, so a secret that slipped into an exception message still never reaches the
  journal.

Pure string work: no I/O, no clock. ``set_secrets`` keeps module state on purpose — a
log formatter has no other way to learn them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LEN",
    "RedactingFormatter",
    "is_secret_param",
    "mask_text",
    "mask_url",
    "set_secrets",
    "strip_query_params",
]

MASK = "***"
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words; such secrets are refused anyway

# Query parameter names that carry credentials, matched as substrings of the lower-cased
# name: token, access_token, apiKey, api_key, listenKey, secret, signature, sig, password,
# passphrase, auth, authorization, credential, session, jwt.
_SECRET_NAME_PARTS = ("token", "key", "secret", "sig", "pass", "auth", "cred", "session", "jwt")
_OPAQUE_SEGMENT = re.compile(r"[A-Za-z0-9]{20,}")
# A URL inside free text: scheme://, then anything up to whitespace or a quote/bracket.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
# name=value pairs outside URLs (e.g. a query string logged on its own).
_PAIR_IN_TEXT = re.compile(
    r"(?i)\b([a-z0-9_.-]*(?:token|secret|signature|listenkey|password|apikey|api_key)"
    r"[a-z0-9_.-]*)=([^&\s'\"]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")

_secrets: tuple[str, ...] = ()


def is_secret_param(name: str) -> bool:
    low = unquote_plus(name).lower()
    return any(part in low for part in _SECRET_NAME_PARTS)


def _mask_query(query: str) -> str:
    if not query:
        return query
    out = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        out.append(f"{name}={MASK}" if sep and is_secret_param(name) else pair)
    return "&".join(out)


def _mask_path(path: str) -> str:
    if not path:
        return path
    return "/".join(
        MASK if _OPAQUE_SEGMENT.fullmatch(seg) and any(c.isdigit() for c in seg) else seg
        for seg in path.split("/")
    )


def mask_url(url: str) -> str:
    """``url`` with userinfo, credential query values and key-like path segments masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not parseable: show nothing rather than something secret
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    return urlunsplit(
        (parts.scheme, netloc, _mask_path(parts.path), _mask_query(parts.query), parts.fragment)
    )


def strip_query_params(query: str, names: Iterable[str]) -> str:
    """``query`` without the ``names`` parameters; every other pair is kept byte for byte."""
    drop = {n.lower() for n in names}
    if not query or not drop:
        return query
    kept = [
        pair
        for pair in query.split("&")
        if unquote_plus(pair.partition("=")[0]).lower() not in drop
    ]
    return "&".join(kept)


def set_secrets(values: Iterable[str | None]) -> None:
    """The secret values every formatted log line is scrubbed of (replaces the previous set)."""
    global _secrets
    found = {v for v in values if v and len(v) >= MIN_SECRET_LEN}
    # Longest first, so a secret that contains another is replaced whole.
    _secrets = tuple(sorted(found, key=len, reverse=True))


def mask_text(text: str) -> str:
    """Free text with URLs masked, credential pairs and bearer tokens hidden, secrets replaced."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    if "=" in text:
        text = _PAIR_IN_TEXT.sub(lambda m: f"{m.group(1)}={MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """A Formatter whose every output line has passed :func:`mask_text`."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))
