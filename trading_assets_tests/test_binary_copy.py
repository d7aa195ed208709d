"""Frames written with binary COPY and read back from binary COPY are the frames written, value for value."""

from datetime import UTC, date, datetime, timedelta

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from psycopg import sql

from trading_assets.io import postgres
from trading_assets.io.postgres import copy_frame, read_frame

TABLE = (
    "(i int4, b int8, f float8, d date, ts timestamptz, s text, ok bool, closes float8[], periods int4[], "
    "tags text[], bounds jsonb)"
)
SCHEMA = {
    "i": pl.Int32,
    "b": pl.Int64,
    "f": pl.Float64,
    "d": pl.Date,
    "ts": pl.Datetime("us", "UTC"),
    "s": pl.String,
    "ok": pl.Boolean,
    "closes": pl.List(pl.Float64),
    "periods": pl.List(pl.Int32),
    "tags": pl.List(pl.String),
    "bounds": pl.String,
}
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-308, 1.7e308])
# Around the spring and autumn clock changes of New York and London, and far from 1970.
instants = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
) | st.sampled_from(
    [datetime(2024, 3, 10, 7, tzinfo=UTC) + timedelta(minutes=m) for m in (-61, -1, 0, 1, 59)]
    + [datetime(2024, 10, 27, 1, tzinfo=UTC) + timedelta(microseconds=u) for u in (-1, 0, 1)]
)
texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
row = st.fixed_dictionaries(
    {
        "i": st.none() | st.integers(-(2**31), 2**31 - 1),
        "b": st.none() | st.integers(-(2**63), 2**63 - 1),
        "f": st.none() | floats,
        "d": st.none() | st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31)),
        "ts": st.none() | instants,
        "s": st.none() | texts,
        "ok": st.none() | st.booleans(),
        "closes": st.none() | st.lists(st.none() | floats, max_size=4),
        "periods": st.none() | st.lists(st.integers(1, 400), max_size=6),
        "tags": st.none() | st.lists(texts, max_size=3),
        "bounds": st.none() | st.sampled_from(['{"lower": 1.5, "upper": 2}', "[]", '{"s": "é"}']),
    }
)


@pytest.fixture
def scratch(database_url: str):
    with psycopg.connect(database_url) as conn:
        conn.execute(f"create temp table roundtrip {TABLE}")
        yield conn


def _round_trip(conn: psycopg.Connection, frame: pl.DataFrame) -> pl.DataFrame:
    conn.execute("truncate roundtrip")
    assert copy_frame(conn, sql.Identifier("roundtrip"), frame) == frame.height
    return read_frame(conn, "select * from roundtrip", schema=SCHEMA)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, max_size=30))
def test_random_frames_round_trip_exactly(scratch: psycopg.Connection, rows: list[dict]) -> None:
    frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    back = _round_trip(scratch, frame)
    # Rows come back in insertion order from a fresh heap; NaN equals NaN, -0.0 stays -0.0.
    assert_frame_equal(back, frame, check_exact=True)


def test_a_large_frame_read_in_several_blocks_round_trips_exactly(scratch: psycopg.Connection) -> None:
    # 100,000 rows x 11 columns: more than one block of a typed read, each decoded while the next arrives.
    examples = [
        {"i": 1, "b": -(2**63), "f": float("nan"), "d": date(1000, 1, 1), "ts": datetime(2024, 3, 10, 7, tzinfo=UTC),
         "s": "é", "ok": True, "closes": [1.5, None, float("-inf")], "periods": [9, 200], "tags": ["a", ""],
         "bounds": '{"lower": 1.5}'},
        dict.fromkeys(SCHEMA),
        {"i": -(2**31), "b": 0, "f": -0.0, "d": date(9999, 12, 31), "ts": datetime(1900, 1, 1, tzinfo=UTC), "s": "",
         "ok": False, "closes": [], "periods": [], "tags": [], "bounds": "[]"},
    ]  # fmt: skip
    frame = pl.DataFrame(examples * 33_334, schema=SCHEMA, orient="row")
    assert_frame_equal(_round_trip(scratch, frame), frame, check_exact=True)


def test_an_empty_frame_writes_nothing_and_reads_back_typed(scratch: psycopg.Connection) -> None:
    empty = pl.DataFrame(schema=SCHEMA)
    assert_frame_equal(_round_trip(scratch, empty), empty)


def test_narrower_frames_are_cast_to_the_table_types_and_numeric_is_read_as_text(scratch: psycopg.Connection) -> None:
    # Python ints arrive as Int64 and dates as strings in some callers: the target's types decide.
    frame = pl.DataFrame({"i": [1, 2], "d": ["2024-02-29", "1999-12-31"]})
    copy_frame(scratch, sql.Identifier("roundtrip"), frame)
    back = read_frame(scratch, "select i, d, sum(i) over () as total from roundtrip order by i", schema={
        "i": pl.Int64, "d": pl.Date, "total": pl.Float64,
    })  # fmt: skip
    assert back.to_dicts() == [
        {"i": 1, "d": date(2024, 2, 29), "total": 3.0},
        {"i": 2, "d": date(1999, 12, 31), "total": 3.0},
    ]


def test_a_value_the_column_cannot_hold_is_refused_with_its_column(scratch: psycopg.Connection) -> None:
    with pytest.raises(pl.exceptions.InvalidOperationError):
        copy_frame(scratch, sql.Identifier("roundtrip"), pl.DataFrame({"i": [2**40]}))


def test_fixed_size_float_arrays_and_sliced_frames_are_written_as_float8_arrays(scratch: psycopg.Connection) -> None:
    # The packed EMA rows arrive as fixed-size arrays, and a frame may be a slice of a larger one.
    arrays = pl.DataFrame(
        {"closes": [[1.5, None, -2.0], None, [float("nan"), float("inf"), 5e-324], [None, None, -0.0]]},
        schema={"closes": pl.Array(pl.Float64, 3)},
    )
    expected = ["{1.5,NULL,-2}", None, "{NaN,Infinity,5e-324}", "{NULL,NULL,-0}"]
    for offset, length in ((0, 4), (1, 3), (2, 1)):
        scratch.execute("truncate roundtrip")
        copy_frame(scratch, sql.Identifier("roundtrip"), arrays.slice(offset, length))
        stored = [text for (text,) in scratch.execute("select closes::text from roundtrip").fetchall()]
        assert stored == expected[offset : offset + length]
    lists = pl.DataFrame({"closes": [[], [1.0], None, [None]]}, schema={"closes": pl.List(pl.Float64)}).slice(1)
    scratch.execute("truncate roundtrip")
    copy_frame(scratch, sql.Identifier("roundtrip"), lists)
    assert scratch.execute("select closes::text from roundtrip").fetchall() == [("{1}",), (None,), ("{NULL}",)]


def test_a_read_decoded_in_many_blocks_is_the_frame_written(
    scratch: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of about 300 bytes: every few rows start a block of their own, decoded while the next arrive.
    rows = [
        {"i": n, "s": "é" * (n % 5), "closes": [float(n), None][: n % 3], "ts": datetime(2024, 3, 10, 7, tzinfo=UTC)}
        for n in range(2_000)
    ]
    frame = pl.DataFrame([{**dict.fromkeys(SCHEMA), **r} for r in rows], schema=SCHEMA, orient="row")
    monkeypatch.setattr(postgres, "_DECODED_BLOCK_BYTES", 300)
    blocks = []
    decode = postgres.decode
    monkeypatch.setattr(postgres, "decode", lambda block, *args: blocks.append(block) or decode(block, *args))
    assert_frame_equal(_round_trip(scratch, frame), frame, check_exact=True)
    assert len(blocks) > 100 and all(b.startswith(b"PGCOPY\n\xff\r\n\x00") and b.endswith(b"\xff\xff") for b in blocks)
