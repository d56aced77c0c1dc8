"""`equals_any`: one value as a scalar parameter, several as an array."""

from __future__ import annotations

from poczta.store.postgres.access import equals_any


def test_one_value_is_a_scalar_parameter() -> None:
    assert equals_any("m.uid", [7], 2, "bigint") == ("m.uid = $2", 7)


def test_several_values_are_one_array_parameter() -> None:
    assert equals_any("digest", ("a", "b"), 1, "text") == ("digest = ANY($1::text[])", ["a", "b"])


def test_no_value_is_an_empty_array_and_matches_nothing() -> None:
    assert equals_any("id", [], 1, "bigint") == ("id = ANY($1::bigint[])", [])
