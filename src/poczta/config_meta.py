"""The metadata of one setting (its meaning and accepted values), shared by the schema modules."""

from __future__ import annotations

from typing import Any

__all__ = ["meta"]


def meta(
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    kind: str = "",
) -> dict[str, Any]:
    """Describe a setting for the loader and the renderer: its meaning and accepted values.

    `kind` refines a string: "domain" means a host name, kept in IDNA ASCII form; "ip" an
    IP address; "network" an IP network in CIDR form (a bare address is one host);
    "hostport" a "HOST:PORT" (or empty). "relay-table" marks a table of domain = "HOST:PORT".
    "size" lets an integer of octets also be written as a string with a unit ("500MiB").
    """
    return {"doc": doc, "minimum": minimum, "maximum": maximum, "choices": choices, "kind": kind}
