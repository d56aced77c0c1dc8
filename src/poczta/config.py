"""The configuration file: poczta.toml read into validated `Config` settings, errors by line.

`load_config(path)` reads one TOML file and returns a frozen `Config` (declared in
`poczta.config_schema`). Every problem is a `ConfigError` whose text is one line,
``FILE:LINE: KEY: what is wrong``; the line is found by scanning the file for the
key (or its ``[table]`` header) and left out only when it cannot be found. The loader
goes on after a bad key (using its default) so that one reading finds every problem:
`read_config` returns them all in a `Validation`, `load_config` raises `ConfigErrors`.

Paths: ``data_dir`` is resolved against the directory holding the file; paths that
live inside the data directory (``tls.certificate``, ``tls.private_key``,
``store.path``) are resolved against ``data_dir``. Absolute paths are kept as given.

`render_default_config` (in `poczta.config_render`) writes a commented poczta.toml
holding every key with its default, which `load_config` reads back.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from poczta.accounts import normalize_domain
from poczta.config_locate import KeyPath, locate_keys
from poczta.config_render import render_default_config
from poczta.config_schema import (
    AuthSettings,
    CheckSettings,
    Config,
    ConfigError,
    DnsSettings,
    Limits,
    ListenAddress,
    Listeners,
    LogSettings,
    SmtpSettings,
    StoreSettings,
    TlsSettings,
)
from poczta.sizes import parse_size

__all__ = [
    "AuthSettings",
    "CheckSettings",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "DnsSettings",
    "Limits",
    "ListenAddress",
    "Listeners",
    "LogSettings",
    "SmtpSettings",
    "StoreSettings",
    "TlsSettings",
    "Validation",
    "load_config",
    "read_config",
    "render_default_config",
    "validate",
    "validate_text",
    "with_overrides",
]

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


class _Problem(Exception):
    """A schema error found while converting; turned into a ConfigError with a line."""

    def __init__(self, path: KeyPath, message: str, *, near: KeyPath = ()) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.near = near  # where to point when `path` itself is absent from the file


class ConfigErrors(ConfigError):
    """Several problems in one file: `errors` holds each, in the order of their lines.

    Its own attributes are those of the first; its text is one line per problem.
    """

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.filename, first.message, key=first.key, line=first.line)
        self.errors = tuple(errors)
        self.args = ("\n".join(str(error) for error in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Validation:
    """What one reading of a config file found: the settings and every problem.

    `config` is None when the file could not be read or parsed as TOML. Otherwise it
    holds every valid key, with defaults in place of the keys named in `bad_keys`, so
    that further checks (`poczta.config_check`) can look at the rest.
    """

    filename: str
    config: Config | None
    errors: tuple[ConfigError, ...]
    bad_keys: frozenset[KeyPath] = frozenset()
    lines: Mapping[KeyPath, int] = dc_field(default_factory=dict)

    def error(self, path: KeyPath, message: str, *, near: KeyPath = ()) -> ConfigError:
        """A ConfigError about `path` pointing at its line (or that of `near`)."""
        line = self.lines.get(path) or _line_of(self.lines, near or path)
        return ConfigError(self.filename, message, key=".".join(path), line=line)

    def is_bad(self, path: KeyPath) -> bool:
        """Whether `path`, a table holding it or (for a table) a key in it had a problem."""
        return any(bad[: len(path)] == path or path[: len(bad)] == bad for bad in self.bad_keys)


def raise_errors(errors: Sequence[ConfigError]) -> None:
    """Raise `errors` as one exception: the ConfigError itself when there is one."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def read_config(path: Path | str) -> Validation:
    """Read the configuration file at `path` and collect every problem in it."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        error = ConfigError(str(file), f"cannot read the file: {exc.strerror or exc}")
        return Validation(str(file), None, (error,))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        error = ConfigError(str(file), "the file is not UTF-8 text", line=line)
        return Validation(str(file), None, (error,))
    return validate(text, str(file), base_dir=file.absolute().parent)


def load_config(path: Path | str) -> Config:
    """Read and validate the configuration file at `path`; raise its problems."""
    return _config_of(read_config(path))


def validate_text(text: str, filename: str, *, base_dir: Path | None = None) -> Config:
    """Validate configuration `text` as if read from `filename`; raise its problems.

    Relative paths resolve against `base_dir`, by default the directory of `filename`.
    """
    return _config_of(validate(text, filename, base_dir=base_dir))


def _config_of(validation: Validation) -> Config:
    raise_errors(validation.errors)
    assert validation.config is not None
    return validation.config


def validate(text: str, filename: str, *, base_dir: Path | None = None) -> Validation:
    """Validate configuration `text` as if read from `filename`, collecting every problem."""
    base = base_dir if base_dir is not None else Path(filename).absolute().parent
    try:
        document = _parse_toml(text, filename)
    except ConfigError as error:
        return Validation(filename, None, (error,))
    problems: list[_Problem] = []
    config = _convert_dataclass(Config, document, (), problems)
    # A default standing in for a bad key could clash with the keys next to it.
    bad_tables = {problem.path[0] for problem in problems}
    problems += [
        problem
        for problem in _consistency_problems(config)
        if not {problem.path[0], *problem.near[:1]} & bad_tables
    ]
    lines = locate_keys(text)
    validation = Validation(
        filename,
        _resolve_paths(config, base, Path(filename)),
        (),
        frozenset(problem.path for problem in problems),
        lines,
    )
    errors = [validation.error(p.path, p.message, near=p.near) for p in problems]
    return replace(validation, errors=tuple(sort_by_line(errors)))


def sort_by_line(errors: Sequence[ConfigError]) -> list[ConfigError]:
    """`errors` in the order of their lines in the file; those without a line last."""
    return sorted(errors, key=lambda error: error.line or math.inf)


def with_overrides(config: Config, overrides: Mapping[str, object]) -> Config:
    """A copy of `config` with dotted keys replaced, values given as in the TOML file.

    ``with_overrides(cfg, {"limits.max_recipients": 5, "listeners.imap": []})``; each
    value is validated like the file's and relative paths are resolved as in the file
    (``data_dir`` against the file's directory, or the working directory for a config
    without a file). Raises ConfigError naming the key.
    """
    result = config
    for dotted, value in overrides.items():
        path = tuple(dotted.split("."))
        try:
            result = _override(result, path, (), value)
            for problem in _consistency_problems(result):
                raise problem
        except _Problem as problem:
            raise ConfigError("override", problem.message, key=".".join(problem.path)) from None
    base = config.source.absolute().parent if config.source is not None else Path.cwd()
    return _resolve_paths(result, base, config.source)


# --------------------------------------------------------------------------- parsing


def _parse_toml(text: str, filename: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        if match:
            detail = message[: match.start()]
            line, column = int(match.group(1)), int(match.group(2))
            raise ConfigError(
                filename, f"invalid TOML: {detail} (column {column})", line=line
            ) from None
        end = _TOML_END.search(message)
        if end:
            line = text.count("\n") + 1
            raise ConfigError(
                filename, f"invalid TOML: {message[: end.start()]}", line=line
            ) from None
        raise ConfigError(filename, f"invalid TOML: {message}") from None
    except (RecursionError, ValueError) as exc:
        raise ConfigError(filename, f"invalid TOML: {exc}") from None


def _line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


# --------------------------------------------------------------------------- conversion


def _convert_dataclass(cls: Any, value: object, path: KeyPath, problems: list[_Problem]) -> Any:
    """Convert the table `value`; a bad key is added to `problems` and left at its default
    (a required one at an empty value), so the other keys are still checked."""
    if not isinstance(value, dict):
        raise _Problem(path, f"expected a table, found {_type_name(value)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name != "source"}
    for key in value:
        if key not in known:
            problems.append(_Problem((*path, key), _unknown_key_message(key, known)))
    kwargs: dict[str, Any] = {}
    for name, spec in known.items():
        required = spec.default is MISSING and spec.default_factory is MISSING
        try:
            if name in value:
                kwargs[name] = _convert(
                    hints[name], spec.metadata, value[name], (*path, name), problems
                )
            elif required:
                raise _Problem((*path, name), "missing required key")
        except _Problem as problem:
            problems.append(problem)
            if required:
                kwargs[name] = hints[name]()
    return cls(**kwargs)


def _unknown_key_message(key: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint}"


def _convert(
    hint: Any, meta: Mapping[str, Any], value: object, path: KeyPath, problems: list[_Problem]
) -> Any:
    if is_dataclass(hint):
        return _convert_dataclass(hint, value, path, problems)
    if meta.get("kind") == "relay-table":
        return _convert_relay_table(value, path)
    if meta.get("kind") == "size" and isinstance(value, str):
        try:
            value = parse_size(value)
        except ValueError as exc:
            raise _Problem(path, str(exc)) from None
    if hint is bool:
        if not isinstance(value, bool):
            raise _Problem(path, f"expected true or false, found {_type_name(value)}")
        return value
    if hint is int or hint is float:
        return _convert_number(hint, meta, value, path)
    if hint is str:
        return _convert_string(meta, value, path)
    if hint is Path:
        text = _convert_string(meta, value, path)
        if not text or "\0" in text:
            raise _Problem(path, "expected a file path, found an empty or invalid string")
        return Path(text)
    if typing.get_origin(hint) is tuple:
        return _convert_list(typing.get_args(hint)[0], meta, value, path)
    raise TypeError(f"setting {'.'.join(path)} has an unsupported type {hint!r}")


def _convert_number(hint: type, meta: Mapping[str, Any], value: object, path: KeyPath) -> Any:
    allowed: tuple[type, ...] = (int,) if hint is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        wanted = "an integer" if hint is int else "a number"
        raise _Problem(path, f"expected {wanted}, found {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Problem(path, f"expected a finite number, found {value}")
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    if minimum is not None and value < minimum:
        what = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
        raise _Problem(path, f"{what}, found {value}")
    if maximum is not None and value > maximum:
        raise _Problem(path, f"must be at most {maximum}, found {value}")
    return hint(value)


def _convert_string(meta: Mapping[str, Any], value: object, path: KeyPath) -> str:
    if not isinstance(value, str):
        raise _Problem(path, f"expected a string, found {_type_name(value)}")
    choices: tuple[str, ...] = meta.get("choices", ())
    if choices and value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise _Problem(path, f"unknown value {value!r}; expected one of {listed}")
    kind = meta.get("kind")
    if kind == "domain":
        return _domain(value, path)
    if kind in ("ip", "network"):
        return _address(value, path, network=kind == "network")
    if kind == "hostport" and value:
        try:
            ListenAddress.parse(value)
        except ValueError as exc:
            raise _Problem(path, str(exc)) from None
    return value


def _convert_relay_table(value: object, path: KeyPath) -> tuple[tuple[str, str], ...]:
    """A table of domain = "HOST:PORT" (a smarthost per sender domain)."""
    if not isinstance(value, dict):
        raise _Problem(path, f"expected a table, found {_type_name(value)}")
    pairs: list[tuple[str, str]] = []
    for key, target in value.items():
        domain = _domain(key, (*path, key))
        pairs.append((domain, _convert_string({"kind": "hostport"}, target, (*path, key))))
    return tuple(pairs)


def _address(value: str, path: KeyPath, *, network: bool) -> str:
    try:
        if network:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        what = "an IP network like 192.0.2.0/24" if network else "an IP address"
        raise _Problem(path, f"{value!r} is not {what}") from None


def _domain(value: str, path: KeyPath) -> str:
    try:
        return normalize_domain(value)
    except ValueError as exc:
        raise _Problem(path, f"{value!r} is not a valid domain name ({exc})") from None


def _convert_list(
    item: Any, meta: Mapping[str, Any], value: object, path: KeyPath
) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise _Problem(path, f"expected an array, found {_type_name(value)}")
    result: list[Any] = []
    for index, element in enumerate(value, start=1):
        if not isinstance(element, str):
            raise _Problem(path, f"item {index}: expected a string, found {_type_name(element)}")
        if item is ListenAddress:
            try:
                result.append(ListenAddress.parse(element))
            except ValueError as exc:
                raise _Problem(path, f"item {index}: {exc}") from None
        else:
            result.append(_convert_string(meta, element, path))
        if result[-1] in result[:-1]:
            raise _Problem(path, f"item {index}: {element!r} is listed twice")
    return tuple(result)


def _consistency_problems(config: Config) -> list[_Problem]:
    """Problems between keys that are each valid on their own."""
    problems: list[_Problem] = []
    if config.store.backend == "postgres" and not config.store.dsn.strip():
        problems.append(
            _Problem(
                ("store", "dsn"), "required when backend is 'postgres'", near=("store", "backend")
            )
        )
    seen: dict[ListenAddress, str] = {}
    for service, addresses in config.listeners.items():
        for address in addresses:
            if address.port and address in seen:
                problems.append(
                    _Problem(
                        ("listeners", service),
                        f"{address} is already used by listeners.{seen[address]}",
                    )
                )
            seen.setdefault(address, service)
            if config.workers != 1 and address.port == 0:
                problems.append(
                    _Problem(
                        ("listeners", service),
                        "port 0 (any free port) cannot be shared by several workers",
                        near=("workers",),
                    )
                )
    checks = config.checks
    if checks.greylist_retry_window <= checks.greylist_delay:
        problems.append(
            _Problem(
                ("checks", "greylist_retry_window"),
                "must be longer than checks.greylist_delay",
                near=("checks", "greylist_delay"),
            )
        )
    return problems


def _resolve_paths(config: Config, base: Path, source: Path | None) -> Config:
    """Make every path absolute (idempotent: absolute paths are kept)."""
    data_dir = (base / config.data_dir).absolute()
    return replace(
        config,
        data_dir=data_dir,
        tls=replace(
            config.tls,
            certificate=data_dir / config.tls.certificate,
            private_key=data_dir / config.tls.private_key,
        ),
        store=replace(config.store, path=data_dir / config.store.path),
        source=source,
    )


def _override(obj: Any, path: KeyPath, done: KeyPath, value: object) -> Any:
    """Replace `path` inside the dataclass `obj` by the converted `value`."""
    name, rest = path[0], path[1:]
    known = {f.name: f for f in fields(obj) if f.name != "source"}
    if name not in known:
        raise _Problem((*done, name), _unknown_key_message(name, known))
    if rest:
        inner = getattr(obj, name)
        if not is_dataclass(inner):
            raise _Problem((*done, name), "is not a table")
        return replace(obj, **{name: _override(inner, rest, (*done, name), value)})
    hint = typing.get_type_hints(type(obj))[name]
    problems: list[_Problem] = []
    converted = _convert(hint, known[name].metadata, value, (*done, name), problems)
    if problems:
        raise problems[0]
    return replace(obj, **{name: converted})
