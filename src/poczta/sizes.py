"""Sizes as people write them: "500MiB", "1G", "1.5 GiB" or plain bytes; and back.

Units are binary (K = KiB = 1024 octets, M, G, T), as Dovecot's quota rules and most
mail tools take them; "MB" and the other decimal-looking names are refused rather than
guessed, since half of their writers mean 10^6 and half 2^20.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_UNITS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    _UNITS[_letter] = _UNITS[_letter + "IB"] = 1024**_power
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")


def parse_size(text: str) -> int:
    """Octets of a size like "500MiB", "1G", "2.5 GiB" or "1048576"; ValueError if none."""
    match = _SIZE.match(text)
    if match is None or not match.group(1).isascii():
        raise ValueError(f"{text!r} is not a size (like 1048576, 500MiB or 1G)")
    unit = match.group(2).upper()
    if unit not in _UNITS:
        hint = " (units are binary: K, M, G, T or KiB, MiB, GiB, TiB)"
        raise ValueError(f"{text!r}: unknown unit {match.group(2)!r}{hint}")
    number = match.group(1)
    if "." in number and _UNITS[unit] == 1:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    whole, _, fraction = number.partition(".")
    scale = _UNITS[unit]
    octets = int(whole) * scale
    if fraction:
        octets += int(fraction) * scale // 10 ** len(fraction)
    return octets


def format_size(octets: int) -> str:
    """A short readable size: "512 B", "1.5 KiB", "500 MiB", "1 GiB"."""
    for letter, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        scale = 1024**power
        if octets >= scale:
            value = f"{octets / scale:.1f}".removesuffix(".0")
            return f"{value} {letter}iB"
    return f"{octets} B"
