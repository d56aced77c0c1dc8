"""Tests for poczta.toml loading: schema, error messages with lines, paths, defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.config import (
    Config,
    ConfigError,
    ConfigErrors,
    ListenAddress,
    load_config,
    read_config,
    validate_text,
    with_overrides,
)
from poczta.config_locate import locate_keys

BASE = 'hostname = "mail.example.org"\ndata_dir = "/srv/mail"\n'


def error_of(text: str, filename: str = "poczta.toml") -> str:
    """The one problem of `text`, as printed."""
    with pytest.raises(ConfigError) as info:
        validate_text(text, filename)
    message = str(info.value)
    assert "\n" not in message
    return message


def errors_of(error: ConfigError) -> tuple[ConfigError, ...]:
    """Every problem an exception of the loader carries, each checked to be one line."""
    errors = error.errors if isinstance(error, ConfigErrors) else (error,)
    assert str(error) == "\n".join(str(e) for e in errors)
    for each in errors:
        assert "\n" not in str(each)
    return errors


# --------------------------------------------------------------------------- valid files


def test_minimal_file_gives_defaults() -> None:
    config = validate_text(BASE, "/etc/poczta/poczta.toml")
    assert config.hostname == "mail.example.org"
    assert config.data_dir == Path("/srv/mail")
    assert config.domains == ()
    assert config.dev_mode is False
    assert config.listeners.smtp == (ListenAddress("0.0.0.0", 25),)
    assert config.listeners.imaps == (ListenAddress("0.0.0.0", 993),)
    assert config.limits.max_message_size == 52_428_800
    assert config.limits.max_auth_failures == 3
    assert config.smtp.bare_line_endings == "normalize"
    assert config.auth.failure_delay == 1.0
    assert config.store.backend == "sqlite"
    assert config.log.level == "info"
    assert config.tls.min_version == "1.2"
    assert config.source == Path("/etc/poczta/poczta.toml")


def test_full_file() -> None:
    text = BASE + (
        'domains = ["Example.ORG", "bücher.example"]\n'
        "dev_mode = true\n"
        '[tls]\nmin_version = "1.3"\ncertificate = "/etc/ssl/mail.pem"\n'
        '[listeners]\nsmtp = ["[::1]:25", "127.0.0.1:2525"]\nimap = []\n'
        "[limits]\nmax_recipients = 7\n"
        "[auth]\nfailure_delay = 2\n"
        '[store]\nbackend = "postgres"\ndsn = "postgresql://poczta@localhost/poczta"\n'
        '[log]\nlevel = "debug"\nformat = "json"\n'
    )
    config = validate_text(text, "/etc/poczta/poczta.toml")
    assert config.domains == ("example.org", "xn--bcher-kva.example")
    assert config.dev_mode is True
    assert config.tls.min_version == "1.3"
    assert config.tls.certificate == Path("/etc/ssl/mail.pem")
    assert config.listeners.smtp == (ListenAddress("::1", 25), ListenAddress("127.0.0.1", 2525))
    assert config.listeners.imap == ()
    assert config.limits.max_recipients == 7
    assert config.auth.failure_delay == 2.0
    assert isinstance(config.auth.failure_delay, float)
    assert config.store.dsn.startswith("postgresql://")
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_dotted_keys_and_inline_tables() -> None:
    text = BASE + 'tls.min_version = "1.3"\nlimits = { max_recipients = 3, max_errors = 4 }\n'
    config = validate_text(text, "poczta.toml")
    assert config.tls.min_version == "1.3"
    assert (config.limits.max_recipients, config.limits.max_errors) == (3, 4)


def test_hostname_is_normalised() -> None:
    config = validate_text('hostname = "Mail.Example.ORG."\ndata_dir = "d"\n', "poczta.toml")
    assert config.hostname == "mail.example.org"


def test_relative_paths(tmp_path: Path) -> None:
    file = tmp_path / "etc" / "poczta.toml"
    file.parent.mkdir()
    file.write_text(
        'hostname = "localhost"\ndata_dir = "data"\n'
        '[tls]\ncertificate = "certs/c.pem"\nprivate_key = "/abs/k.pem"\n'
        '[store]\npath = "db/mail.db"\n'
    )
    config = load_config(file)
    data = tmp_path / "etc" / "data"
    assert config.data_dir == data
    assert config.tls.certificate == data / "certs/c.pem"
    assert config.tls.private_key == Path("/abs/k.pem")
    assert config.store.path == data / "db/mail.db"
    assert config.source == file


def test_default_tls_and_store_paths_live_in_data_dir() -> None:
    config = validate_text(BASE, "poczta.toml")
    assert config.tls.certificate == Path("/srv/mail/tls/cert.pem")
    assert config.tls.private_key == Path("/srv/mail/tls/key.pem")
    assert config.store.path == Path("/srv/mail/poczta.db")


def test_config_is_frozen() -> None:
    config = validate_text(BASE, "poczta.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hostname = "other"  # type: ignore[misc]


def test_listen_address_roundtrip() -> None:
    for text in ("0.0.0.0:25", "[::1]:993", "[2001:db8::1]:0", "localhost:2525"):
        assert str(ListenAddress.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    ["25", ":25", "host:", "host:port", "[::1:25", "[nonsense]:25", "::1:25", "h:-1", "h:65536"],
)
def test_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ListenAddress.parse(text)


# --------------------------------------------------------------------------- errors


def test_unknown_key_suggests() -> None:
    message = error_of(BASE + "[listeners]\nimpa = []\n")
    assert message == "poczta.toml:4: listeners.impa: unknown key 'impa'; did you mean 'imap'?"
    top = error_of(BASE + "hostnmae = 'x'\n")
    assert top == "poczta.toml:3: hostnmae: unknown key 'hostnmae'; did you mean 'hostname'?"
    table = error_of(BASE + "[limits]\nmax_recipient = 3\n")
    assert "did you mean 'max_recipients'?" in table
    assert error_of(BASE + "[frobnicate]\n").startswith("poczta.toml:3: frobnicate: unknown key")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[listeners]\nsmtp = ["0.0.0.0:70000"]\n', "poczta.toml:4: listeners.smtp: item 1"),
        ('[listeners]\nsmtp = "0.0.0.0:25"\n', "poczta.toml:4: listeners.smtp: expected an array"),
        ("[listeners]\nsmtp = [25]\n", "poczta.toml:4: listeners.smtp: item 1: expected a string"),
        ('[tls]\nmin_version = "1.1"\n', "poczta.toml:4: tls.min_version: unknown value '1.1'"),
        ("[limits]\n\nmax_recipients = -1\n", "poczta.toml:5: limits.max_recipients: must be"),
        ("[limits]\nmax_command_line = 100\n", "poczta.toml:4: limits.max_command_line: must be"),
        ('[limits]\nidle_timeout = "5m"\n', "poczta.toml:4: limits.idle_timeout: expected an int"),
        ("[limits]\nmax_errors = 1.5\n", "poczta.toml:4: limits.max_errors: expected an integer"),
        ("[limits]\nmax_errors = true\n", "poczta.toml:4: limits.max_errors: expected an integer"),
        ("[auth]\nfailure_delay = -0.5\n", "poczta.toml:4: auth.failure_delay: must not be negat"),
        ("[auth]\nfailure_delay = nan\n", "poczta.toml:4: auth.failure_delay: expected a finite"),
        ('dev_mode = "yes"\n', "poczta.toml:3: dev_mode: expected true or false"),
        ('[smtp]\nbare_line_endings = "fix"\n', "poczta.toml:4: smtp.bare_line_endings: unknown"),
        ('[store]\nbackend = "mysql"\n', "poczta.toml:4: store.backend: unknown value 'mysql'"),
        ('[store]\nbackend = "postgres"\n', "poczta.toml:4: store.dsn: required when backend"),
        ('[store]\npath = ""\n', "poczta.toml:4: store.path: expected a file path"),
        ('[log]\nlevel = "loud"\n', "poczta.toml:4: log.level: unknown value 'loud'"),
        ("tls = 3\n", "poczta.toml:3: tls: expected a table, found an integer"),
        ("[[limits]]\n", "poczta.toml:3: limits: expected a table, found an array"),
        ('domains = ["a..b"]\n', "poczta.toml:3: domains: 'a..b' is not a valid domain"),
        ('domains = ["a.org", "A.org"]\n', "poczta.toml:3: domains: item 2: 'A.org' is listed"),
        (
            '[listeners]\nsmtp = ["[::1]:25"]\nimap = ["[::1]:25"]\n',
            "poczta.toml:5: listeners.imap: [::1]:25 is already used by listeners.smtp",
        ),
        ("tls.min_version = 2\n", "poczta.toml:3: tls.min_version: expected a string"),
        (
            'limits = { max_errors = 3, max_recipients = "x" }\n',
            "poczta.toml:3: limits.max_recipients: expected an integer",
        ),
    ],
)
def test_schema_errors(extra: str, expected: str) -> None:
    assert error_of(BASE + extra).startswith(expected)


def test_missing_required_keys() -> None:
    assert error_of('data_dir = "d"\n') == "poczta.toml: hostname: missing required key"
    assert error_of('hostname = "h"\n') == "poczta.toml: data_dir: missing required key"
    with pytest.raises(ConfigErrors) as info:
        validate_text("", "poczta.toml")
    assert [str(e) for e in errors_of(info.value)] == [
        "poczta.toml: hostname: missing required key",
        "poczta.toml: data_dir: missing required key",
    ]


def test_bad_hostname() -> None:
    message = error_of('hostname = "bad host"\ndata_dir = "d"\n')
    assert message.startswith("poczta.toml:1: hostname: 'bad host' is not a valid domain name")


def test_toml_syntax_errors_carry_line() -> None:
    assert error_of(BASE + "[limits\n").startswith("poczta.toml:3: invalid TOML:")
    assert error_of(BASE + "x = = 1\n").startswith("poczta.toml:3: invalid TOML:")
    assert error_of(BASE + "hostname = 'again'\n").startswith("poczta.toml:3: invalid TOML:")


def test_load_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"^.*nope\.toml: cannot read the file"):
        load_config(missing)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'hostname = "h"\n\xff\xfe\n')
    with pytest.raises(ConfigError, match=r"bin\.toml:2: the file is not UTF-8 text$"):
        load_config(binary)


def test_error_attributes() -> None:
    with pytest.raises(ConfigError) as info:
        validate_text(BASE + "[limits]\nmax_errors = 0\n", "x.toml")
    error = info.value
    assert (error.filename, error.line, error.key) == ("x.toml", 4, "limits.max_errors")


# --------------------------------------------------------------------------- every error at once

THREE_PROBLEMS = (
    'hostname = "bad host"\n'  # 1
    'data_dir = "/srv/mail"\n'  # 2
    "[limits]\n"  # 3
    "max_recipients = 0\n"  # 4
    "max_errors = 5\n"  # 5
    "[log]\n"  # 6
    'level = "loud"\n'  # 7
)


def all_errors(text: str) -> tuple[ConfigError, ...]:
    """The problems of `text` (more than one), as loading it as p.toml raises them."""
    with pytest.raises(ConfigErrors) as info:
        validate_text(text, "p.toml")
    return errors_of(info.value)


def lines_and_keys(text: str) -> list[tuple[int | None, str | None]]:
    return [(e.line, e.key) for e in all_errors(text)]


def test_every_problem_is_reported_in_line_order() -> None:
    with pytest.raises(ConfigErrors) as info:
        validate_text(THREE_PROBLEMS, "p.toml")
    errors = errors_of(info.value)
    assert [(e.line, e.key) for e in errors] == [
        (1, "hostname"),
        (4, "limits.max_recipients"),
        (7, "log.level"),
    ]
    assert str(errors[1]) == "p.toml:4: limits.max_recipients: must be at least 1, found 0"
    first = info.value  # a ConfigErrors is also the first of its errors
    assert (first.filename, first.line, first.key) == ("p.toml", 1, "hostname")


def test_a_bad_key_does_not_hide_the_next_in_its_table() -> None:
    text = BASE + '[limits]\nmax_recipients = "many"\nmax_errrors = 3\nmax_commands = -1\n'
    assert [str(e) for e in all_errors(text)] == [
        "p.toml:4: limits.max_recipients: expected an integer, found a string",
        "p.toml:5: limits.max_errrors: unknown key 'max_errrors'; did you mean 'max_errors'?",
        "p.toml:6: limits.max_commands: must be at least 1, found -1",
    ]


def test_every_duplicate_listener_is_reported() -> None:
    text = BASE + (
        '[listeners]\nsmtp = ["127.0.0.1:25"]\nsubmission = ["127.0.0.1:25"]\n'
        'pop3 = ["127.0.0.1:25"]\n[checks]\ngreylist_delay = 100000\n'
    )
    assert lines_and_keys(text) == [
        (5, "listeners.submission"),
        (6, "listeners.pop3"),
        (8, "checks.greylist_retry_window"),
    ]
    assert "already used by listeners.smtp" in all_errors(text)[1].message


def test_defaults_standing_in_for_bad_keys_do_not_clash() -> None:
    # the default smtp listener (0.0.0.0:25) and the default greylist_delay (300) would clash
    text = BASE + (
        '[listeners]\nsmtp = "0.0.0.0:25"\nsubmission = ["0.0.0.0:25"]\n'
        '[checks]\ngreylist_delay = "long"\ngreylist_retry_window = 200\n'
    )
    assert lines_and_keys(text) == [
        (4, "listeners.smtp"),
        (7, "checks.greylist_delay"),
    ]


def test_read_config_keeps_the_valid_keys(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text(BASE + "workers = 3\n[limits]\nmax_recipients = 7\nmax_errors = 0\n")
    validation = read_config(file)
    assert [e.key for e in validation.errors] == ["limits.max_errors"]
    assert validation.config is not None
    assert validation.config.workers == 3 and validation.config.limits.max_recipients == 7
    assert validation.config.limits.max_errors == 10  # the default stands in for the bad one
    assert validation.is_bad(("limits", "max_errors")) and validation.is_bad(("limits",))
    assert not validation.is_bad(("workers",)) and not validation.is_bad(
        ("limits", "max_recipients")
    )
    with pytest.raises(ConfigError) as info:  # one problem: the ConfigError itself
        load_config(file)
    assert type(info.value) is ConfigError
    assert str(info.value) == f"{file}:6: limits.max_errors: must be at least 1, found 0"


def test_read_config_of_unparsable_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(BASE + "[limits\nmax_errors = 0\n")
    validation = read_config(broken)
    assert validation.config is None
    assert [e.line for e in validation.errors] == [3]
    assert read_config(tmp_path / "absent.toml").config is None


# --------------------------------------------------------------------------- locating keys


def test_locate_keys() -> None:
    text = (
        "# comment\n"
        'hostname = "h"  # trailing\n'
        'notes = """\n'
        "fake = 1\n"
        '"""\n'
        "[limits]\n"
        "max_errors = 3\n"
        '[ "auth" ]\n'
        "'failure_delay' = 1\n"
        "log.level = 'x'\n"
        "tls = { min_version = '1.3', inner = { deep = 1 }, after = 2 }\n"
    )
    found = locate_keys(text)
    assert found[("hostname",)] == 2
    assert found[("notes",)] == 3
    assert ("fake",) not in found
    assert found[("limits",)] == 6
    assert found[("limits", "max_errors")] == 7
    assert found[("auth", "failure_delay")] == 9
    assert found[("auth", "log", "level")] == 10
    assert found[("auth", "tls", "min_version")] == 11
    assert found[("auth", "tls", "inner", "deep")] == 11
    assert found[("auth", "tls", "after")] == 11


def test_dev_config(tmp_path: Path) -> None:
    config = Config.dev(tmp_path)
    assert config.hostname == "localhost"
    assert config.domains == ("example.test",)
    assert config.dev_mode is True
    ports = {name: addrs[0].port for name, addrs in config.listeners.items()}
    assert ports == {
        "smtp": 2525,
        "submission": 2587,
        "submissions": 2465,
        "pop3": 2110,
        "pop3s": 2995,
        "imap": 2143,
        "imaps": 2993,
    }
    assert all(addrs[0].host == "127.0.0.1" for _, addrs in config.listeners.items())
    assert config.store.backend == "sqlite"
    assert config.store.path == tmp_path / "poczta.db"
    assert config.tls.certificate == tmp_path / "tls" / "cert.pem"
    assert config.source is None
    ephemeral = Config.dev(tmp_path, ephemeral_ports=True)
    assert {a[0].port for _, a in ephemeral.listeners.items()} == {0}


def test_with_overrides(tmp_path: Path) -> None:
    config = Config.dev(tmp_path)
    changed = with_overrides(
        config, {"limits.max_recipients": 5, "listeners.imap": [], "dev_mode": False}
    )
    assert changed.limits.max_recipients == 5
    assert changed.listeners.imap == ()
    assert changed.dev_mode is False
    assert config.limits.max_recipients == 100
    with pytest.raises(ConfigError, match=r"^override: limits.max_recipients: must be at least 1"):
        with_overrides(config, {"limits.max_recipients": 0})
    with pytest.raises(ConfigError, match="did you mean 'max_recipients'"):
        with_overrides(config, {"limits.max_recipient": 3})
    with pytest.raises(ConfigError, match="hostname: is not a table"):
        with_overrides(config, {"hostname.x": 3})
    assert config.replace(hostname="other").hostname == "other"
    moved = with_overrides(config, {"store.path": "other.db", "tls.private_key": "/k.pem"})
    assert moved.store.path == tmp_path / "other.db"
    assert moved.tls.private_key == Path("/k.pem")
    assert moved.source is None


# --------------------------------------------------------------------------- fuzzing

_TOML_PIECES = st.sampled_from(
    [
        "hostname",
        "data_dir",
        "[listeners]",
        "[limits]",
        "[[tls]]",
        "smtp",
        "max_recipients",
        "tls.min_version",
        " = ",
        "=",
        '"0.0.0.0:25"',
        '"[::1]:993"',
        "[",
        "]",
        "{",
        "}",
        ",",
        ".",
        "\n",
        '"',
        "'",
        '"""',
        "#",
        "1",
        "-3",
        "1e400",
        "nan",
        "true",
        "1979-05-27T07:32:00Z",
        '"h.example"',
        '"d"',
        "\\u0000",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_TOML_PIECES, max_size=40).map("".join))
def test_tomlish_text_raises_only_config_error(text: str) -> None:
    try:
        validate_text(text, "fuzz.toml")
    except ConfigError as error:
        assert all(str(e).startswith("fuzz.toml") for e in errors_of(error))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        validate_text(BASE + text, "any.toml")
    except ConfigError as error:
        assert all(str(e).startswith("any.toml") for e in errors_of(error))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["limits", "tls", "listeners", "store", "log", "auth", "domains"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=8,
        ).filter(lambda v: v is not None),
    )
)
def test_arbitrary_values_raise_only_config_error(document: dict[str, object]) -> None:
    try:
        config = with_overrides(Config.dev(Path("data")), document)
    except ConfigError as error:
        assert str(error).startswith("override")
    else:
        assert isinstance(config, Config)


# --------------------------------------------------------------------------- [dns] and [checks]


def test_checks_and_dns_defaults() -> None:
    config = validate_text(BASE, "poczta.toml")
    assert config.dns.nameservers == () and config.dns.port == 53 and config.dns.timeout == 2.0
    checks = config.checks
    assert checks.enabled and not checks.report_only and checks.greylisting
    assert checks.dnsbl_ip_zones == () and checks.dnsbl_domain_zones == ()
    assert (checks.dmarc_reject, checks.spf_fail, checks.dkim_fail) == ("reject", "junk", "accept")


def test_checks_and_dns_values() -> None:
    text = BASE + (
        '[dns]\nnameservers = ["127.0.0.1", "::1"]\nport = 5353\ntimeout = 0.5\n'
        '[checks]\ndnsbl_ip_zones = ["zen.spamhaus.org"]\nspf_fail = "reject"\n'
        'greylist_exempt_networks = ["192.0.2.7", "2001:db8::/32"]\ngreylist_delay = 60\n'
    )
    config = validate_text(text, "poczta.toml")
    assert config.dns.nameservers == ("127.0.0.1", "::1") and config.dns.port == 5353
    assert config.checks.dnsbl_ip_zones == ("zen.spamhaus.org",)
    assert config.checks.spf_fail == "reject" and config.checks.greylist_delay == 60
    assert config.checks.greylist_exempt_networks == ("192.0.2.7/32", "2001:db8::/32")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[dns]\nnameservers = ["dns.example"]\n', "poczta.toml:5: dns.nameservers: 'dns.example'"),
        ("[dns]\ntimeout = 0\n", "poczta.toml:5: dns.timeout: must be at least 0.05"),
        ("[dns]\nport = 70000\n", "poczta.toml:5: dns.port: must be at most 65535"),
        ('[checks]\nspf_fail = "drop"\n', "poczta.toml:5: checks.spf_fail: unknown value 'drop'"),
        ('[checks]\ndnsbl_action = "defer"\n', "checks.dnsbl_action: unknown value 'defer'"),
        ('[checks]\ngreylist_exempt_networks = ["x"]\n', "not an IP network"),
        ("[checks]\ngreylist_delay = 100\ngreylist_retry_window = 50\n", "must be longer"),
        ("[checks]\nenable = false\n", "unknown key 'enable'; did you mean 'enabled'?"),
    ],
)
def test_checks_and_dns_errors(extra: str, expected: str) -> None:
    assert expected in error_of(BASE + "\n" + extra)


def test_dev_config_checks_only_report(tmp_path: Path) -> None:
    config = Config.dev(tmp_path)
    assert config.checks.enabled and config.checks.report_only
    assert config.dns.timeout == 0.5


def test_workers() -> None:
    assert validate_text(BASE, "poczta.toml").workers == 1
    assert validate_text(BASE + "workers = 0\n", "poczta.toml").workers == 0
    assert validate_text(BASE + "workers = 4\n", "poczta.toml").workers == 4
    assert "workers: must be at most 64" in error_of(BASE + "workers = 65\n")
    assert "workers: must not be negative" in error_of(BASE + "workers = -1\n")
    shared_any_port = BASE + 'workers = 2\n[listeners]\nsmtp = ["127.0.0.1:0"]\n'
    assert "cannot be shared by several workers" in error_of(shared_any_port)
    assert Config.dev(Path("/srv/dev"), ephemeral_ports=True).workers == 1
