"""Minute-bar files read incrementally: from the byte offset where the previous read stopped to the last complete
line, so a file that grows (appended) is read from where it stopped and a line still being written waits.

Names say what a file holds:
- `lean_equity_<usa|india>_<symbol>_1m_trade.csv`: Lean minute trade bars (date, time_ms since local midnight,
  prices x 10000, volume), in the exchange's time zone;
- `<US|NSE>_<SYMBOL>.csv`: `ts` (ISO 8601 with UTC offset, the minute's start), open, high, low, close, volume,
  and optionally vwap, trade_count, oi.
"""

import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from trading_assets.compute.calendars import EXCHANGE_ZONES
from trading_assets.compute.intraday import MINUTE_SCHEMA
from trading_assets.compute.validation import REJECT_SCHEMA
from trading_assets.errors import input_error

_LEAN = re.compile(r"^lean_equity_(usa|india)_([a-z0-9]+)_1m_trade\.csv$")
_GENERIC = re.compile(r"^(US|NSE)_([A-Za-z0-9.&-]+)\.csv$")
_LEAN_MARKETS = {"usa": "US", "india": "NSE"}
LEAN_PRICE_SCALE = 10_000
ROW_SCHEMA = {**MINUTE_SCHEMA, "source_file": pl.String, "source_line": pl.Int32}


@dataclass(frozen=True)
class MinuteChunk:
    rows: pl.DataFrame  # ROW_SCHEMA
    rejects: pl.DataFrame  # REJECT_SCHEMA
    end_offset: int  # bytes read, through the last complete line
    end_line: int  # lines read (the header included)


def instrument(path: Path) -> tuple[str, str, bool]:
    """(exchange, symbol, is_lean) from the file name."""
    if match := _LEAN.match(path.name):
        return _LEAN_MARKETS[match.group(1)], match.group(2).upper(), True
    if match := _GENERIC.match(path.name):
        return match.group(1), match.group(2), False
    raise input_error(path, "name it lean_equity_<usa|india>_<symbol>_1m_trade.csv or <US|NSE>_<SYMBOL>.csv")


def read_minutes(path: Path, offset: int, lines_before: int) -> MinuteChunk:
    """The complete lines of `path` after byte `offset` (`lines_before` lines were read before it)."""
    exchange, symbol, lean = instrument(path)
    with path.open("rb") as handle:
        size = handle.seek(0, io.SEEK_END)
        if size < offset:
            raise input_error(path, f"{size} bytes, {offset} were read before: the file was replaced, not appended")
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    data = data[:end]
    line_count = data.count(b"\n")
    header = offset == 0
    if header:
        first = data.split(b"\n", 1)[0].decode(errors="replace").strip()
        expected = "date,time_ms,open,high,low,close,volume" if lean else "ts,open,high,low,close,volume"
        if not first.startswith(expected):
            raise input_error(path, f"{first[:80]!r} is not the header {expected}...", 1)
        names = first.split(",")
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    else:
        names = pl.read_csv(path, n_rows=0).columns
    first_line = lines_before + 1 + (1 if header else 0)
    empty = pl.DataFrame(schema=ROW_SCHEMA)
    if not data.strip():
        return MinuteChunk(empty, pl.DataFrame(schema=REJECT_SCHEMA), offset + end, lines_before + line_count)
    raw = pl.read_csv(io.BytesIO(data), has_header=False, new_columns=names, infer_schema=False)
    raw = raw.with_row_index("source_line", offset=first_line).with_columns(
        raw=pl.concat_str(pl.all().exclude("source_line"), separator=",", ignore_nulls=True)
    )
    number = {c: pl.col(c).cast(pl.Float64, strict=False) for c in ("open", "high", "low", "close", "volume")}
    if lean:
        zone = EXCHANGE_ZONES[exchange]
        local = pl.col("date").str.to_date("%Y%m%d", strict=False).cast(pl.Datetime("us"))
        ts = (local + pl.duration(milliseconds=pl.col("time_ms").cast(pl.Int64, strict=False))).dt.replace_time_zone(
            zone, ambiguous="null", non_existent="null"
        )
        prices = {c: number[c] / LEAN_PRICE_SCALE for c in ("open", "high", "low", "close")}
        extra = {"vwap": pl.lit(None, pl.Float64), "trade_count": pl.lit(None, pl.Int64), "oi": pl.lit(None, pl.Int64)}
    else:
        ts = pl.col("ts").str.replace(r"[zZ]$", "+00:00").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False)
        prices = {c: number[c] for c in ("open", "high", "low", "close")}
        extra = {
            name: (pl.col(name).cast(dtype, strict=False) if name in names else pl.lit(None, dtype))
            for name, dtype in (("vwap", pl.Float64), ("trade_count", pl.Int64), ("oi", pl.Int64))
        }
    parsed = raw.select(
        "source_line",
        "raw",
        exchange=pl.lit(exchange),
        symbol=pl.lit(symbol),
        ts=ts.dt.convert_time_zone("UTC"),
        **prices,
        volume=number["volume"],
        **extra,
    )
    problems = [
        (pl.col("ts").is_null(), "timestamp unreadable"),
        (
            pl.any_horizontal(~(pl.col(c).is_finite() & (pl.col(c) > 0)).fill_null(True) for c in prices),
            "a price is missing, not finite or not positive",
        ),
        (~(pl.col("volume") >= 0).fill_null(False), "volume is missing or negative"),
        (
            (pl.col("high") < pl.max_horizontal("open", "close", "low"))
            | (pl.col("low") > pl.min_horizontal("open", "close", "high")),
            "OHLC out of order",
        ),
        (pl.col("ts").is_duplicated(), "minute listed twice"),
    ]
    reason = pl.concat_str(
        [pl.when(t.fill_null(False)).then(pl.lit(r)) for t, r in problems], separator="; ", ignore_nulls=True
    )
    checked = parsed.with_columns(reason=reason)
    rejects = checked.filter(pl.col("reason") != "").select(
        source_file=pl.lit(path.name), source_line=pl.col("source_line").cast(pl.Int32), reason="reason", raw="raw"
    )
    rows = checked.filter(pl.col("reason") == "").select(
        *MINUTE_SCHEMA, source_file=pl.lit(path.name), source_line=pl.col("source_line").cast(pl.Int32)
    )
    return MinuteChunk(rows.cast(ROW_SCHEMA), rejects, offset + end, lines_before + line_count)
