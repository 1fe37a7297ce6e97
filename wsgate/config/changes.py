"""What a reload changes, key by key, and which keys need a restart.

Every key of the schema is either applied live by a reload or listed in
:data:`RESTART_KEYS`; nothing is reported as applied and then ignored
(``tests/e2e/test_reload_walk.py`` changes every key through a real reload and checks
the running daemon against the claim). A restart-required key keeps its running value
until the restart: :func:`keep_restart_values` puts the old value back into the config
the reload applies, so ``status``, alert labels and the connection store agree.

A change is reported as ``routes.binance.strategy: adaptive -> least_connections``.
Values are shown masked (:mod:`wsgate.config.dump`); a change only a secret carries
shows as ``(secret changed)``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from wsgate.config.dump import config_to_dict
from wsgate.config.schema import Config

__all__ = [
    "RESTART_KEYS",
    "KeyChange",
    "clients_detail",
    "flatten",
    "keep_restart_values",
    "key_changes",
    "needs_restart",
    "render_value",
]

# Keys (or whole sections) that a running daemon cannot take over: the sockets it has
# bound, the SQLite files it holds open, the identity other nodes and the stores know it
# by, and the cluster link.
RESTART_KEYS: tuple[str, ...] = (
    "daemon.node_id",
    "daemon.control_socket",
    "daemon.state_dir",
    "gateway.listen",
    # wss on or off is the listener's own setting; the files are re-read on every reload
    "gateway.tls_cert_file",
    "gateway.tls_key_file",
    "metrics.listen",
    "cluster",
)

# Entities reported as one line when added or removed, not key by key.
_ENTITIES = ("routes", "alerts.channels")


def needs_restart(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESTART_KEYS)


# Route keys an open upstream connection only takes at its next (re)connect: they shape
# the WebSocket handshake or its keepalive. New connections use them at once.
_AT_RECONNECT = ("ping_interval", "ping_timeout", "app_ping_interval", "use_proxy", "tls")


def note_for(key: str) -> str:
    parts = key.split(".")
    if len(parts) >= 3 and parts[0] == "routes" and parts[2] in _AT_RECONNECT:
        return "open connections take it at their next reconnect"
    return ""


def clients_detail(old: Any, new: Any) -> str:
    """``gateway.clients`` (an array of tables) as a change per client and key:
    ``added gamma; alpha.routes: ["a"] -> ["b"]``."""
    before = {c.get("name"): c for c in old or [] if isinstance(c, dict)}
    after = {c.get("name"): c for c in new or [] if isinstance(c, dict)}
    parts = [f"added {n}" for n in after if n not in before]
    parts += [f"removed {n}" for n in before if n not in after]
    for name, cfg in after.items():
        was = before.get(name)
        if was is None or was == cfg:
            continue
        for key in [*cfg, *(k for k in was if k not in cfg)]:
            if was.get(key) != cfg.get(key):
                parts.append(
                    f"{name}.{key}: {render_value(was.get(key))} -> {render_value(cfg.get(key))}"
                )
    return "; ".join(parts)


@dataclass(frozen=True)
class KeyChange:
    key: str
    old: Any  # None: absent
    new: Any
    restart_required: bool = False

    @property
    def detail(self) -> str:
        """A readable form of a change whose values are whole arrays of tables."""
        return clients_detail(self.old, self.new) if self.key == "gateway.clients" else ""

    def as_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "old": self.old, "new": self.new}
        note = note_for(self.key)
        if note:
            out["note"] = note
        if self.detail:
            out["detail"] = self.detail
        return out

    def render(self) -> str:
        text = f"{self.key}: " + (
            self.detail or f"{render_value(self.old)} -> {render_value(self.new)}"
        )
        note = "restart required" if self.restart_required else note_for(self.key)
        return text + (f" ({note})" if note else "")


def render_value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, separators=(",", ":"), default=str)


def flatten(doc: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(doc, dict) and doc:
        for key, value in doc.items():
            flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = doc


def _entity(key: str) -> str | None:
    """``routes.a.strategy`` -> ``routes.a``; None when the key is not inside an entity."""
    for base in _ENTITIES:
        if key.startswith(base + "."):
            name = key[len(base) + 1 :].split(".", 1)[0]
            return f"{base}.{name}"
    return None


def key_changes(old: Config, new: Config) -> list[KeyChange]:
    """One change per differing key, in config order; added/removed routes and channels
    are one change each."""
    raw_old: dict[str, Any] = {}
    raw_new: dict[str, Any] = {}
    shown_old: dict[str, Any] = {}
    shown_new: dict[str, Any] = {}
    flatten(config_to_dict(old, mask_secrets=False), "", raw_old)
    flatten(config_to_dict(new, mask_secrets=False), "", raw_new)
    flatten(config_to_dict(old), "", shown_old)
    flatten(config_to_dict(new), "", shown_new)
    entities_old = {e for k in raw_old if (e := _entity(k))}
    entities_new = {e for k in raw_new if (e := _entity(k))}
    changes: list[KeyChange] = []
    seen_entities: set[str] = set()
    for key in [*raw_old, *(k for k in raw_new if k not in raw_old)]:
        entity = _entity(key)
        if entity is not None and (entity in entities_old) != (entity in entities_new):
            if entity not in seen_entities:
                seen_entities.add(entity)
                added = entity in entities_new
                changes.append(
                    KeyChange(entity, None if added else "(present)", "(added)" if added else None)
                )
            continue
        a, b = raw_old.get(key), raw_new.get(key)
        if a == b:
            continue
        sa, sb = shown_old.get(key), shown_new.get(key)
        if sa == sb:
            sa, sb = "(secret)", "(secret changed)"
        changes.append(KeyChange(key, sa, sb, needs_restart(key)))
    return changes


def keep_restart_values(old: Config, new: Config) -> Config:
    """``new`` with every restart-required key at its running (``old``) value."""
    for key in RESTART_KEYS:
        section, _, field = key.partition(".")
        if not hasattr(new, section):
            continue
        if not field:
            new = dataclasses.replace(new, **{section: getattr(old, section)})
            continue
        sub = dataclasses.replace(
            getattr(new, section), **{field: getattr(getattr(old, section), field)}
        )
        new = dataclasses.replace(new, **{section: sub})
    return new
