"""A commented poczta.toml: every key with its default and its meaning, from the schema.

`render_default_config` is what `poczta init` writes; `poczta.config.load_config`
reads it back unchanged.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

from poczta.config_schema import Config

__all__ = ["render_default_config"]


def render_default_config(
    hostname: str, data_dir: Path | str, domains: Sequence[str], user: str = ""
) -> str:
    """A fully commented poczta.toml: every key, its default and its meaning; without a
    `user`, its line is commented out (as an example)."""
    out = [
        "# poczta configuration. Every key is shown with its default value.",
        "# A relative data_dir is taken from this file's directory; the tls and store",
        "# paths are taken from data_dir.",
        "",
    ]
    given: dict[str, object] = {
        "hostname": hostname,
        "data_dir": str(data_dir),
        "domains": list(domains),
        "user": user,
    }
    hints = typing.get_type_hints(Config)
    tables: list[tuple[str, Any]] = []
    for spec in fields(Config):
        if spec.name == "source":
            continue
        if is_dataclass(hints[spec.name]):
            tables.append((spec.name, hints[spec.name]))
            continue
        if spec.name == "user" and not user:
            doc, line = _render_key("user", "poczta", spec.metadata)
            out += [doc, f"# {line}"]
            continue
        value = given[spec.name] if spec.name in given else _default_of(spec)
        out += _render_key(spec.name, value, spec.metadata)
    for name, section in tables:
        doc = (section.__doc__ or "").strip().removeprefix(f"[{name}]:").strip()
        out += ["", f"# {doc}", f"[{name}]"]
        for spec in fields(section):
            out += _render_key(spec.name, _default_of(spec), spec.metadata)
    return "\n".join(out) + "\n"


def _default_of(spec: Any) -> object:
    value = spec.default_factory() if spec.default is MISSING else spec.default
    if isinstance(value, tuple):
        return [str(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _render_key(name: str, value: object, meta: Mapping[str, Any]) -> list[str]:
    doc = str(meta.get("doc", ""))
    choices: tuple[str, ...] = meta.get("choices", ())
    if choices:
        doc += " (" + " | ".join(choices) + ")"
    if meta.get("kind") == "relay-table":  # a table of strings, written inline
        items = typing.cast(Sequence[tuple[str, str]], value or ())
        pairs = ", ".join(f"{_toml_string(k)} = {_toml_string(v)}" for k, v in items)
        return [f"# {doc}", f"{name} = {{{pairs}}}"]
    return [f"# {doc}", f"{name} = {_toml_value(value)}"]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
    escapes |= {"\f": "\\f", "\r": "\\r"}
    parts = []
    for char in text:
        if char in escapes:
            parts.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(char)
    return '"' + "".join(parts) + '"'
