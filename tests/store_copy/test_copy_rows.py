"""The neutral rows of a store copy: each backend's conversion gives back what it was given,
offsets of zoned times included, and equal rows have equal digests."""

from __future__ import annotations

import string
from datetime import UTC, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from poczta.store.copy.tables import TABLES, Kind, Row, Table, row_digest
from poczta.store.postgres.dump import _neutral_row, _selected, _stored_row
from poczta.store.sqlite.dump import _neutral, _stored

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
_ZONES = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_VALUES: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.TEXT: _TEXT,
    Kind.JSON: _TEXT,
    Kind.INT: st.integers(-(2**63), 2**63 - 1),
    Kind.FLOAT: st.floats(allow_nan=False),
    Kind.BOOL: st.booleans(),
    Kind.FLAGS: st.frozensets(st.text(string.ascii_letters + "\\$", min_size=1), max_size=4).map(
        lambda flags: tuple(sorted(flags))
    ),
    Kind.TIME: st.datetimes(timezones=st.just(UTC)),
    Kind.QUEUE_TIME: st.datetimes(timezones=st.just(UTC)),
    Kind.ZONED_TIME: st.datetimes(timezones=_ZONES),
}


@st.composite
def table_rows(draw: st.DrawFn) -> tuple[Table, Row]:
    table = draw(st.sampled_from(TABLES))
    row = tuple(draw(st.none() | _VALUES[column.kind]) for column in table.columns)
    return table, row


def _offsets(table: Table, row: Row) -> list[Any]:
    return [
        value.utcoffset() if value is not None and column.kind is Kind.ZONED_TIME else None
        for column, value in zip(table.columns, row, strict=True)
    ]


@given(table_rows())
def test_sqlite_columns_give_back_the_rows_they_were_made_of(case: tuple[Table, Row]) -> None:
    table, row = case
    kinds = [column.kind for column in table.columns]
    back = tuple(_neutral(k, _stored(k, v)) for k, v in zip(kinds, row, strict=True))
    assert back == row
    assert _offsets(table, back) == _offsets(table, row)
    assert row_digest(table, back) == row_digest(table, row)


@given(table_rows())
def test_postgres_columns_give_back_the_rows_they_were_made_of(case: tuple[Table, Row]) -> None:
    table, row = case
    record = dict(zip(_selected(table), _stored_row(table, row), strict=True))
    back = _neutral_row(table, record)
    assert back == row
    assert _offsets(table, back) == _offsets(table, row)
    assert row_digest(table, back) == row_digest(table, row)
