"""Config overrides from the environment and the command line, merged before validation.

Precedence, highest first: a command-line flag (``wsgate run --listen``), then an
environment variable ``WSGATE_<SECTION>_<KEY>`` (``WSGATE_GATEWAY_LISTEN``,
``WSGATE_DAEMON_LOG_LEVEL``, ``WSGATE_JOBS_HEALTH_CHECK_INTERVAL=5s``), then the file,
then the default. Any scalar key of a top-level section can be set this way; routes,
channels and rules are tables in the file only. An override goes through the same
validation as the file, and a problem with it names the variable or flag.

Variables that the config names as secret sources (``*_env`` keys such as
``events_token_env = "WSGATE_GATEWAY_TOKEN"``) are never read as overrides.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tomli

from wsgate.config_locate import did_you_mean
from wsgate.errors import ConfigProblem

__all__ = ["ENV_PREFIX", "Override", "apply_overrides", "env_overrides", "override_keys"]

ENV_PREFIX = "WSGATE_"


@dataclass(frozen=True)
class Override:
    key: str  # dotted: "gateway.listen"
    raw: str  # as given; converted by the key's type
    source: str  # "$WSGATE_GATEWAY_LISTEN" or "--listen"


def _sections() -> dict[str, type]:
    from wsgate.config_schema import Config

    hints = typing.get_type_hints(Config)
    return {
        name: cls
        for name, cls in hints.items()
        if isinstance(cls, type) and dataclasses.is_dataclass(cls)
    }


def override_keys() -> dict[str, tuple[str, ...]]:
    """Section -> the scalar keys an override may set."""
    out: dict[str, tuple[str, ...]] = {}
    for section, cls in _sections().items():
        hints = typing.get_type_hints(cls)
        out[section] = tuple(
            f.name for f in dataclasses.fields(cls) if _scalar(hints.get(f.name, Any))
        )
    return out


def _scalar(tp: Any) -> bool:
    args = typing.get_args(tp)
    if args:  # X | None, tuple[...]
        if typing.get_origin(tp) is tuple:
            return all(a is str or a is Ellipsis for a in args)  # origins = ["a", "b"]
        return all(_scalar(a) for a in args)
    return not (isinstance(tp, type) and dataclasses.is_dataclass(tp))


def _is_text(section: str, key: str) -> bool:
    cls = _sections()[section]
    tp = typing.get_type_hints(cls).get(key)
    args = typing.get_args(tp)
    return tp is str or (bool(args) and str in args and typing.get_origin(tp) is not tuple)


def env_overrides(environ: Mapping[str, str], secret_names: set[str]) -> list[Override]:
    """``WSGATE_<SECTION>_<KEY>`` variables, sorted by name; unknown keys raise later."""
    sections = sorted(_sections(), key=len, reverse=True)
    found: list[Override] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in secret_names:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in sections:
            if rest.startswith(section + "_") and len(rest) > len(section) + 1:
                key = rest[len(section) + 1 :]
                found.append(Override(f"{section}.{key}", environ[name], f"${name}"))
                break
    return found


def _convert(section: str, key: str, raw: str) -> Any:
    if _is_text(section, key):
        return raw
    try:
        return tomli.loads(f"v = {raw}")["v"]
    except tomli.TOMLDecodeError:
        return raw  # "5s" for a duration; anything else fails validation with the key named


def apply_overrides(doc: dict[str, Any], overrides: Sequence[Override]) -> list[ConfigProblem]:
    """Set each override in the parsed TOML ``doc`` (later ones win); unknown keys are problems."""
    allowed = override_keys()
    problems: list[ConfigProblem] = []
    for ov in overrides:
        section, _, key = ov.key.partition(".")
        if section not in allowed or key not in allowed[section]:
            choices = [f"{s}.{k}" for s, keys in allowed.items() for k in keys]
            hint = did_you_mean(ov.key, choices)
            message = f"{ov.source}: no config key {ov.key!r} to override"
            problems.append(ConfigProblem(ov.key, message, None, hint))
            continue
        table = doc.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the file's own problem ("expected a table") is reported by validation
        table[key] = _convert(section, key, ov.raw)
    return problems
