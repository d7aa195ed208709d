"""PostgreSQL's binary COPY format to and from Arrow: frames travel as typed binary values, never as text.

Writing, pgpq encodes Arrow record batches; the frame is first cast to the exact types of the target's
columns (binary COPY refuses an int8 for an int4 column). Reading, a compiled scan finds every field of the
stream and numpy turns each column into an Arrow array (big-endian values, PostgreSQL's 2000-01-01 epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numba
import numpy as np
import polars as pl
import psycopg
import pyarrow as pa
from pgpq import ArrowToPostgresBinaryEncoder
from pgpq.encoders import LargeStringEncoderBuilder
from pgpq.schema import Jsonb
from psycopg import sql

_EPOCH_DAYS = 10_957  # 1970-01-01 to 2000-01-01
_EPOCH_MICROS = _EPOCH_DAYS * 86_400 * 1_000_000
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_BATCH_ROWS = 100_000

# Element types by name: their polars type and the big-endian numpy type of their binary value.
_SCALARS: dict[str, tuple[pl.DataType, str | None]] = {
    "bool": (pl.Boolean(), "?"),
    "int2": (pl.Int16(), ">i2"),
    "int4": (pl.Int32(), ">i4"),
    "int8": (pl.Int64(), ">i8"),
    "float4": (pl.Float32(), ">f4"),
    "float8": (pl.Float64(), ">f8"),
    "date": (pl.Date(), ">i4"),
    "timestamptz": (pl.Datetime("us", "UTC"), ">i8"),
    "timestamp": (pl.Datetime("us"), ">i8"),
    "text": (pl.String(), None),
    "varchar": (pl.String(), None),
    "name": (pl.String(), None),
    "jsonb": (pl.String(), None),
}


class ColumnType:
    """A column's PostgreSQL type as this module moves it: element name, and whether it is an array."""

    def __init__(self, conn: psycopg.Connection, oid: int) -> None:
        info = conn.adapters.types.get(oid)
        self.name = info.name if info is not None else f"oid {oid}"
        self.array = info is not None and info.array_oid == oid and info.oid != oid

    @property
    def supported(self) -> bool:
        return self.name in _SCALARS

    @property
    def polars(self) -> pl.DataType:
        element = _SCALARS[self.name][0]
        return pl.List(element) if self.array else element


def column_types(conn: psycopg.Connection, query: sql.Composable) -> tuple[list[str], list[ColumnType]]:
    """Names and types of the columns `query` returns (run with no rows)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("select * from ({}) q limit 0").format(query))
        return [d.name for d in cur.description], [ColumnType(conn, d.type_code) for d in cur.description]


def readable(conn: psycopg.Connection, query: sql.Composable) -> tuple[sql.Composable, list[ColumnType]]:
    """`query` and its column types, with the columns of types this module does not decode (numeric, say)
    sent as their text, for the caller's schema to parse."""
    names, types = column_types(conn, query)
    if all(t.supported for t in types):
        return query, types
    columns = [
        sql.Identifier(n) if t.supported else sql.SQL("{}::text").format(sql.Identifier(n))
        for n, t in zip(names, types, strict=True)
    ]
    text = ColumnType(conn, conn.adapters.types["text"].oid)
    wrapped = sql.SQL("select {} from ({}) q").format(sql.SQL(", ").join(columns), query)
    return wrapped, [t if t.supported else text for t in types]


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` cast to `schema` (strictly: a value the type cannot hold is an error); text dates and times
    are parsed as ISO."""

    def cast(name: str, dtype: pl.DataType) -> pl.Expr:
        column = pl.col(name)
        if frame.schema[name] == pl.String and dtype == pl.Date:
            return column.str.to_date("%Y-%m-%d")
        if frame.schema[name] == pl.String and isinstance(dtype, pl.Datetime):
            return column.str.to_datetime(time_unit="us", time_zone=dtype.time_zone)
        return column.cast(dtype)

    return frame.select(cast(name, dtype) for name, dtype in schema.items())


def encode(frame: pl.DataFrame, types: Sequence[ColumnType]) -> Iterator[bytes]:
    """The binary COPY stream of `frame`, its columns cast to `types`, in blocks."""
    unsupported = [f"{n} ({t.name})" for n, t in zip(frame.columns, types, strict=True) if not t.supported]
    if unsupported:
        raise TypeError(f"binary COPY cannot write columns of these types: {', '.join(unsupported)}")
    table = conform(frame, {name: t.polars for name, t in zip(frame.columns, types, strict=True)}).to_arrow()
    encoders = {
        field.name: LargeStringEncoderBuilder.new_with_output(field, Jsonb())
        if t.name == "jsonb"
        else ArrowToPostgresBinaryEncoder.infer_encoder(field)
        for field, t in zip(table.schema, types, strict=True)
    }
    encoder = ArrowToPostgresBinaryEncoder.new_with_encoders(table.schema, encoders)
    yield encoder.write_header()
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        yield encoder.write_batch(batch)
    yield encoder.finish()


@numba.njit(cache=True, inline="always")
def _int32(buffer: np.ndarray, at: int) -> int:
    """The big-endian 32-bit length at `at`, as unsigned (0xFFFFFFFF is NULL's -1)."""
    return (
        (np.int64(buffer[at]) << 24)
        | (np.int64(buffer[at + 1]) << 16)
        | (np.int64(buffer[at + 2]) << 8)
        | np.int64(buffer[at + 3])
    )


@numba.njit(cache=True)
def _scan(buffer: np.ndarray, columns: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Offset and length (-1: NULL) of every field of the tuples after the header."""
    rows, position = 0, start
    while True:
        count = (np.int64(buffer[position]) << 8) | np.int64(buffer[position + 1])
        if count == 0xFFFF:
            break
        position += 2
        for _ in range(columns):
            length = _int32(buffer, position)
            position += 4
            if length != 0xFFFFFFFF:
                position += length
        rows += 1
    offsets = np.empty((rows, columns), np.int64)
    lengths = np.empty((rows, columns), np.int64)
    position = start
    for row in range(rows):
        position += 2
        for column in range(columns):
            length = _int32(buffer, position)
            position += 4
            offsets[row, column] = position
            if length == 0xFFFFFFFF:
                lengths[row, column] = -1
            else:
                lengths[row, column] = length
                position += length
    return offsets, lengths


@numba.njit(cache=True)
def _array_elements(
    buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one-dimensional arrays of fixed-width elements: each array's element count, and each element's
    offset and length (-1: NULL)."""
    counts = np.zeros(offsets.shape[0], np.int64)
    total = 0
    for row in range(offsets.shape[0]):
        if lengths[row] < 0:
            continue
        at = offsets[row]
        dims = np.int64(buffer[at + 3]) | (np.int64(buffer[at + 2]) << 8)
        if dims > 0:
            at += 12
            counts[row] = _int32(buffer, at)
        total += counts[row]
    element_offsets = np.empty(total, np.int64)
    element_lengths = np.empty(total, np.int64)
    index = 0
    for row in range(offsets.shape[0]):
        if counts[row] == 0:
            continue
        at = offsets[row] + 20
        for _ in range(counts[row]):
            length = _int32(buffer, at)
            at += 4
            element_offsets[index] = at
            if length == 0xFFFFFFFF:
                element_lengths[index] = -1
            else:
                element_lengths[index] = length
                at += length
            index += 1
    return counts, element_offsets, element_lengths


def _fixed(buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, name: str) -> pa.Array:
    big_endian = _SCALARS[name][1]
    width = np.dtype(big_endian).itemsize
    valid = lengths >= 0
    picked = buffer[np.where(valid, offsets, 0)[:, None] + np.arange(width)]
    values = picked.reshape(-1).view(big_endian).astype(big_endian[1:] if width > 1 else "?")
    mask = None if valid.all() else ~valid
    if name == "date":
        return pa.array(values + _EPOCH_DAYS, pa.int32(), mask=mask).cast(pa.date32())
    if name in ("timestamptz", "timestamp"):
        zone = "UTC" if name == "timestamptz" else None
        return pa.array(values + _EPOCH_MICROS, pa.int64(), mask=mask).cast(pa.timestamp("us", zone))
    return pa.array(values, mask=mask)


def _text(buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, name: str) -> pa.Array:
    skip = 1 if name == "jsonb" else 0  # jsonb's binary value is a version byte, then the text
    valid = lengths >= 0
    sizes = np.where(valid, lengths - skip, 0)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    data = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
    # Every byte of the result, gathered in one step: its source is its field's offset plus its place in it.
    within = np.arange(len(data)) - np.repeat(starts, sizes)
    data[:] = buffer[np.repeat(offsets + skip, sizes) + within]
    arrow_offsets = np.concatenate([[0], ends]).astype(np.int64)
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.LargeStringArray.from_buffers(
        len(lengths), pa.py_buffer(arrow_offsets), pa.py_buffer(data), validity, int((~valid).sum())
    )


def decode(payload: bytes, names: Sequence[str], types: Sequence[ColumnType]) -> pl.DataFrame:
    """The frame a binary COPY TO STDOUT stream holds, typed by `types`."""
    if not payload:
        return pl.DataFrame(schema={n: t.polars for n, t in zip(names, types, strict=True)})
    buffer = np.frombuffer(payload, np.uint8)
    if payload[: len(_SIGNATURE)] != _SIGNATURE:
        raise ValueError("not a PostgreSQL binary COPY stream")
    extension = int.from_bytes(payload[15:19], "big")
    offsets, lengths = _scan(buffer, len(names), 19 + extension)
    arrays = []
    for column, t in enumerate(types):
        at, size = offsets[:, column], lengths[:, column]
        if not t.array:
            arrays.append((_text if _SCALARS[t.name][1] is None else _fixed)(buffer, at, size, t.name))
            continue
        counts, element_at, element_size = _array_elements(buffer, at, size)
        values = (_text if _SCALARS[t.name][1] is None else _fixed)(buffer, element_at, element_size, t.name)
        list_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        mask = pa.array(size < 0) if (size < 0).any() else None
        arrays.append(pa.LargeListArray.from_arrays(pa.array(list_offsets, pa.int64()), values, mask=mask))
    frame = pl.from_arrow(pa.Table.from_arrays(arrays, names=list(names)), rechunk=False)
    return frame.cast({n: t.polars for n, t in zip(names, types, strict=True)})
