"""Config overrides from the environment and the command line, merged before validation.

Precedence, highest first: a command-line flag (``wsgate run --listen``), then an
environment variable ``WSGATE_<SECTION>_<KEY>`` (``WSGATE_GATEWAY_LISTEN``,
``WSGATE_DAEMON_LOG_LEVEL``, ``WSGATE_JOBS_HEALTH_CHECK_INTERVAL=5s``), then the file,
then the default. Routes, alert channels and rules the file defines take
``WSGATE_ROUTES_<ROUTE>_<KEY>`` (``WSGATE_ROUTES_BINANCE_STRATEGY``,
``WSGATE_ROUTES_BINANCE_TLS_VERIFY``), ``WSGATE_ALERTS_CHANNELS_<NAME>_<KEY>`` and
``WSGATE_ALERTS_RULES_<TYPE>_<KEY>``; a name with underscores is matched against the
names in the file. An override goes through the same validation as the file, and a
problem with it names the variable or flag.

A list key takes the whole list (it replaces the file's, never adds to it): a TOML or JSON
array (``WSGATE_CLUSTER_SERVERS='["nats://a:4222", "nats://b:4222"]'``) or, for a list
of strings, a comma-separated one (``WSGATE_GATEWAY_ORIGINS=https://a.example,https://b.example``;
an empty value is an empty list). The two arrays of tables a deployment may need to
set, ``routes.<route>.endpoints`` and ``gateway.clients``, take an array of inline tables:
``WSGATE_ROUTES_BINANCE_ENDPOINTS='[{url = "wss://a.example:9443"}, {url = "wss://b.example:9443"}]'``
(or the JSON ``[{"url": "wss://a.example:9443"}]``).

Variables that the config names as secret sources (``*_env`` keys such as
``events_token_env = "WSGATE_GATEWAY_TOKEN"``) are never read as overrides.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tomli

from wsgate.config.locate import did_you_mean, short
from wsgate.errors import ConfigProblem

__all__ = [
    "ENV_PREFIX",
    "ListOf",
    "Override",
    "apply_overrides",
    "env_overrides",
    "override_keys",
]

ENV_PREFIX = "WSGATE_"


@dataclass(frozen=True)
class Override:
    key: str  # dotted: "gateway.listen"
    raw: str  # as given; converted by the key's type
    source: str  # "$WSGATE_GATEWAY_LISTEN" or "--listen"


def _sections() -> dict[str, type]:
    from wsgate.config.schema import Config

    hints = typing.get_type_hints(Config)
    return {
        name: cls
        for name, cls in hints.items()
        if isinstance(cls, type) and dataclasses.is_dataclass(cls)
    }


# Arrays of tables an override may set as a whole (the other tuples of tables, such as
# alerts.channels, are tables of tables in the file, or pairs).
_TABLE_LISTS = frozenset({"endpoints", "clients"})


@dataclass(frozen=True)
class ListOf:
    """The declared type of a list key: of strings, or of tables (``tables``)."""

    tables: bool


def _list_item(tp: Any) -> Any | None:
    """The item type of ``tuple[X, ...]`` (or ``tuple[X, ...] | None``), else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return args[0] if len(args) == 2 and args[1] is Ellipsis else None
    items = [_list_item(a) for a in args if a is not type(None)]
    return items[0] if len(items) == 1 else None


def _scalar(tp: Any) -> bool:
    args = typing.get_args(tp)
    if args:  # X | None
        return typing.get_origin(tp) is not tuple and all(_scalar(a) for a in args)
    return not (isinstance(tp, type) and dataclasses.is_dataclass(tp))


def _fields(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted settable keys of a config dataclass (nested tables such as tls. included) ->
    type: scalars, and lists as :class:`ListOf`."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, Any)
        item = _list_item(tp)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(_fields(tp, f"{prefix}{f.name}."))
        elif item is str:
            out[f"{prefix}{f.name}"] = ListOf(tables=False)
        elif dataclasses.is_dataclass(item) and f.name in _TABLE_LISTS:
            out[f"{prefix}{f.name}"] = ListOf(tables=True)
        elif item is None and _scalar(tp):
            out[f"{prefix}{f.name}"] = tp
    return out


def _entity_fields() -> dict[str, dict[str, Any]]:
    """Entity kind -> its settable keys: "routes" (per route), "channels", "rules"."""
    from wsgate.config.schema import AlertChannelConfig, AlertRuleConfig, RouteConfig

    drop = {"name", "type"}
    return {
        "routes": {k: t for k, t in _fields(RouteConfig).items() if k != "name"},
        "channels": {k: t for k, t in _fields(AlertChannelConfig).items() if k not in drop},
        "rules": {k: t for k, t in _fields(AlertRuleConfig).items() if k not in drop},
    }


def override_keys() -> dict[str, tuple[str, ...]]:
    """Section -> the scalar keys an override may set (routes, channels, rules apart)."""
    out: dict[str, tuple[str, ...]] = {}
    for section, cls in _sections().items():
        out[section] = tuple(k for k in _fields(cls) if "." not in k)
    return out


def _type_of(path: list[str]) -> Any | None:
    """The declared type of a dotted key, or None when the schema has no such key."""
    entities = _entity_fields()
    if len(path) >= 3 and path[0] == "routes":
        return entities["routes"].get(".".join(path[2:]))
    if len(path) >= 4 and path[:2] == ["alerts", "channels"]:
        return entities["channels"].get(".".join(path[3:]))
    if len(path) >= 4 and path[:2] == ["alerts", "rules"]:
        return entities["rules"].get(".".join(path[3:]))
    if len(path) == 2 and path[0] in _sections():
        return _fields(_sections()[path[0]]).get(path[1])
    return None


def _is_text(tp: Any) -> bool:
    args = typing.get_args(tp)
    return tp is str or (bool(args) and str in args and typing.get_origin(tp) is not tuple)


def _match(rest: str, names: list[str]) -> tuple[str, str] | None:
    """``"bitfinex_auth_strategy"`` over names -> ("bitfinex_auth", "strategy"), longest first."""
    for name in sorted(names, key=len, reverse=True):
        low = name.lower()
        if rest.startswith(low + "_") and len(rest) > len(low) + 1:
            return name, rest[len(low) + 1 :]
    return None


def _dotted(key: str, fields: dict[str, Any]) -> str:
    """``tls_verify`` -> ``tls.verify`` when that is a nested key of the entity."""
    for dotted in fields:
        if "." in dotted and dotted.replace(".", "_") == key:
            return dotted
    return key


def _resolve(rest: str, doc: dict[str, Any]) -> str:
    """The dotted key a variable's lower-cased tail names, routes/channels/rules by the names
    the file defines (their names may hold underscores); unresolved tails stay readable."""
    entities = _entity_fields()
    if rest.startswith("routes_"):
        routes = doc.get("routes")
        hit = _match(rest[7:], list(routes) if isinstance(routes, dict) else [])
        if hit:
            return f"routes.{hit[0]}.{_dotted(hit[1], entities['routes'])}"
        return "routes." + rest[7:]
    alerts = doc.get("alerts") if isinstance(doc.get("alerts"), dict) else {}
    for kind in ("channels", "rules"):
        head = f"alerts_{kind}_"
        if rest.startswith(head):
            from wsgate.config.schema import ALERT_RULE_TYPES

            table = alerts.get(kind) if isinstance(alerts, dict) else None
            names = list(table) if isinstance(table, dict) else []
            if kind == "rules":
                names = sorted({*names, *ALERT_RULE_TYPES})
            hit = _match(rest[len(head) :], names)
            if hit:
                return f"alerts.{kind}.{hit[0]}.{_dotted(hit[1], entities[kind])}"
            return f"alerts.{kind}." + rest[len(head) :]
    for section in sorted(_sections(), key=len, reverse=True):
        if rest.startswith(section + "_") and len(rest) > len(section) + 1:
            return f"{section}.{rest[len(section) + 1 :]}"
    return rest


def env_overrides(
    environ: Mapping[str, str], secret_names: set[str], doc: dict[str, Any] | None = None
) -> list[Override]:
    """``WSGATE_<SECTION>_<KEY>`` variables (and ``WSGATE_ROUTES_<ROUTE>_<KEY>``,
    ``WSGATE_ALERTS_CHANNELS_<NAME>_<KEY>``, ``WSGATE_ALERTS_RULES_<TYPE>_<KEY>`` for the
    routes, channels and rules the file defines), sorted by name; unknown keys raise later."""
    sections = [*_sections(), "routes"]
    found: list[Override] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in secret_names:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if not any(rest.startswith(s + "_") for s in sections):
            continue  # WSGATE_SOCKET, WSGATE_DEBUG, ...: not config keys
        found.append(Override(_resolve(rest, doc or {}), environ[name], f"${name}"))
    return found


def _convert(tp: Any, raw: str) -> Any:
    if _is_text(tp):
        return raw
    try:
        return tomli.loads(f"v = {raw}")["v"]
    except tomli.TOMLDecodeError:
        return raw  # "5s" for a duration; anything else fails validation with the key named


def _list_hint(ov: Override, tables: bool) -> str:
    name = ov.source.removeprefix("$")
    if tables:
        return (
            f'write an array of inline tables, e.g. {name}=\'[{{url = "wss://a.example"}}, '
            f'{{url = "wss://b.example", weight = 2}}]\', or the same in JSON'
        )
    return (
        f'write a TOML or JSON array, e.g. {name}=\'["x", "y"]\', or a comma-separated '
        f"list, {name}=x,y"
    )


def _list_value(ov: Override, of: ListOf) -> list[Any] | ConfigProblem:
    """The list an override names: an array literal (TOML, else JSON) or, for strings only,
    comma-separated items (an empty value: an empty list)."""
    raw = ov.raw.strip()

    def problem(message: str) -> ConfigProblem:
        return ConfigProblem(ov.key, f"{ov.source}: {message}", None, _list_hint(ov, of.tables))

    if raw.startswith("["):
        try:
            value: Any = tomli.loads(f"v = {raw}")["v"]
        except tomli.TOMLDecodeError as exc:
            try:
                value = json.loads(raw)
            except ValueError:
                return problem(f"{short(raw)} is not a TOML or JSON array ({exc})")
        if isinstance(value, list):
            return value
    if of.tables:
        return problem(f"expected an array of tables, got {short(raw)}")
    if not raw:
        return []
    items = [item.strip() for item in raw.split(",")]
    if not all(items):
        return problem(f"an empty item in the comma-separated list {short(raw)}")
    return items


def _known_keys(doc: dict[str, Any]) -> list[str]:
    keys = [f"{s}.{k}" for s, ks in override_keys().items() for k in ks]
    entities = _entity_fields()
    routes = doc.get("routes")
    for name in routes if isinstance(routes, dict) else []:
        keys += [f"routes.{name}.{k}" for k in entities["routes"]]
    return keys


def apply_overrides(doc: dict[str, Any], overrides: Sequence[Override]) -> list[ConfigProblem]:
    """Set each override in the parsed TOML ``doc`` (later ones win); unknown keys are problems.

    A route, channel or rule must exist in the file (a rule always exists): an override sets
    a key, it never creates a table the file does not have.
    """
    problems: list[ConfigProblem] = []
    for ov in overrides:
        path = ov.key.split(".")
        tp = _type_of(path)
        entity_missing = False
        if tp is not None and path[0] == "routes":
            entity_missing = not isinstance(doc.get("routes"), dict) or path[1] not in doc["routes"]
        if tp is not None and path[:2] == ["alerts", "channels"]:
            alerts = doc.get("alerts")
            chans = alerts.get("channels") if isinstance(alerts, dict) else None
            entity_missing = not isinstance(chans, dict) or path[2] not in chans
        if tp is None or entity_missing:
            hint = did_you_mean(ov.key, _known_keys(doc))
            message = f"{ov.source}: no config key {ov.key!r} to override"
            problems.append(ConfigProblem(ov.key, message, None, hint))
            continue
        node: Any = doc
        for part in path[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        if isinstance(node, dict):  # else the file's own problem is reported by validation
            if isinstance(tp, ListOf):
                value = _list_value(ov, tp)
                if isinstance(value, ConfigProblem):
                    problems.append(value)
                    continue
                node[path[-1]] = value
            else:
                node[path[-1]] = _convert(tp, ov.raw)
    return problems
