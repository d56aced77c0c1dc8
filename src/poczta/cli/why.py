"""`poczta why`: the verdict on one stored message and each check's result, as recorded.

The checks of incoming mail leave two header fields on every message they let in: an
Authentication-Results field under our host name (RFC 8601's registered methods: spf,
dkim, dmarc) and X-Poczta-Verdict (the action, the action the policy called for, the
reasons, and the results of the checks without a registered method, dnsbl and
greylist, written as resinfos among the reasons). Incoming copies of both are removed
before ours are added, so the topmost ones with our name are ours; this command reads
them back and shows every check's result in one list.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from poczta.cli.common import config_options, resolve_config, run_with_store
from poczta.cli.mail import read_stored
from poczta.mailauth.dkim import split_message
from poczta.mailauth.results import (
    AuthResultsSyntaxError,
    ResInfo,
    authserv_id_of,
    parse_authentication_results,
)
from poczta.smtp.checks import VERDICT_HEADER, parse_verdict_header

_RECORDED = re.compile(r"[a-z][a-z0-9-]*=")
_SET_ASIDE = re.compile(r"(?P<check>[a-z]+): .* ignored: (?P<why>.*) -> accept\Z")


def _reasons(verdict: dict[str, str]) -> list[str]:
    return [r for r in verdict.get("reasons", "").split(" | ") if r and r != "none"]


def _unfold(value: bytes) -> str:
    return re.sub(r"\r?\n[ \t]*", " ", value.decode("utf-8", "replace")).strip()


def recorded_checks(message: bytes, authserv_id: str) -> dict[str, Any] | None:
    """What the checks recorded on `message`: the verdict fields and every check's result
    (our Authentication-Results field's, then those among the verdict's reasons), each
    marked with why it was ignored if the verdict set it aside; None when the message
    carries neither field.

    Only fields above the first Received field count: the checks write theirs on top
    of our trace field, and anything below it came with the message.
    """
    headers = split_message(message)[0]
    ours = authserv_id.lower().rstrip(".")
    verdict: dict[str, str] | None = None
    results: list[ResInfo] | None = None
    for name, value in headers:
        key = name.strip().lower()
        if key == b"received":
            break
        if key == VERDICT_HEADER.lower().encode() and verdict is None:
            verdict = parse_verdict_header(_unfold(value))
        elif key == b"authentication-results" and results is None:
            text = _unfold(value)
            claimed = authserv_id_of(text)
            if claimed is None or claimed.lower().rstrip(".") != ours:
                continue
            try:
                results = parse_authentication_results(text).results
            except AuthResultsSyntaxError:
                results = []
    if verdict is None and results is None:
        return None
    reasons = _reasons(verdict or {})
    recorded = [r for r in reasons if _RECORDED.match(r)]
    checks = [_check(r) for r in (results or []) + _parse_recorded(recorded)]
    for set_aside in filter(None, map(_SET_ASIDE.match, reasons)):
        for check in checks:
            if check["method"] == set_aside["check"]:
                check["ignored"] = set_aside["why"]
    return {"verdict": verdict or {}, "checks": checks}


def _parse_recorded(entries: list[str]) -> list[ResInfo]:
    """The dnsbl and greylist results the verdict recorded among its reasons."""
    out: list[ResInfo] = []
    for entry in entries:
        try:
            out.extend(parse_authentication_results("recorded; " + entry).results)
        except AuthResultsSyntaxError:
            continue
    return out


def _check(info: ResInfo) -> dict[str, Any]:
    return {
        "method": info.method,
        "result": info.result,
        "reason": info.reason,
        "properties": {k: v for k, v in info.properties},
    }


def report_lines(where: str, authserv_id: str, record: dict[str, Any]) -> list[str]:
    """The text `poczta why` prints for a `recorded_checks` record."""
    verdict = record["verdict"]
    lines = [f"message: {where}"]
    if verdict:
        line = f"verdict: {verdict.get('action', '?')} (policy asked for {verdict.get('enforced')}"
        if verdict.get("report-only") == "yes":
            line += "; report-only mode"
        if verdict.get("by"):
            line += f"; decided by {verdict['by']}"
        lines.append(line + ")")
        reasons = [r for r in _reasons(verdict) if not _RECORDED.match(r)]
        lines.append("reasons:" + ("" if reasons else " none"))
        lines.extend(f"  {reason}" for reason in reasons)
    lines.append(f"checks (Authentication-Results of {authserv_id}, then X-Poczta-Verdict):")
    for check in record["checks"]:
        details = [" ".join(f"{k}={v}" for k, v in check["properties"].items())]
        details.append(f"({check['reason']})" if check["reason"] else "")
        details.append(f"[ignored: {check['ignored']}]" if check.get("ignored") else "")
        line = f"  {check['method']:<9} {check['result']:<10} " + " ".join(filter(None, details))
        lines.append(line.rstrip())
    return lines


@click.command()
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.argument("address")
@click.argument("mailbox")
@click.argument("uid", type=int)
def why(
    config_path: Path | None,
    data_dir: Path | None,
    address: str,
    mailbox: str,
    uid: int,
    as_json: bool,
) -> None:
    """Why a stored message is where it is: the verdict and each check's result."""
    config = resolve_config(config_path, data_dir)
    data = run_with_store(config, lambda store: read_stored(store, address, mailbox, uid))
    record = recorded_checks(data, config.hostname)
    where = f"uid {uid} in {mailbox} of {address}"
    if record is None:
        click.echo(
            f"{where}: no verdict recorded (submitted by a user, or received with the checks off)"
        )
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(record, indent=1))
        return
    click.echo("\n".join(report_lines(where, config.hostname, record)))
