"""Readers for daily price files: headed CSVs in any common spelling, and Lean's headerless daily files.

A reader returns the rows it could parse (with their line numbers) and, separately, the rows it could
not, each with a reason; only a file whose layout it cannot recognise at all raises.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from trading_assets.compute.validation import duplicate_problems
from trading_assets.errors import InputError, Problem

PRICE_SCHEMA = {
    "trade_date": pl.Date,
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "source_file": pl.String,
    "line": pl.Int64,
}
FORMATS = ("auto", "csv", "lean")

_DATE_HEADERS = ("date", "timestamp", "time", "datetime", "day", "")
_CLOSE_HEADERS = ("close", "last", "price")
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y", "%Y%m%d", "%Y%m%d %H:%M")
_LEAN_TRADE_FIELDS = 6  # time, open, high, low, close, volume
_LEAN_QUOTE_FIELDS = 11  # time, bid OHLC, bid size, ask OHLC, ask size


@dataclass(frozen=True)
class PriceFile:
    prices: pl.DataFrame
    problems: list[Problem]


def parse_stamp(text: str, timezone: str = "UTC") -> tuple[date, datetime | None] | None:
    """The trading date of a date or timestamp and, when the text holds a time, the instant in UTC (a naive
    time is read in `timezone`, an aware one is converted to it for the date)."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
        for layout in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(value, layout)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    zone = ZoneInfo(timezone)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(zone)
    elif ":" not in value:
        return parsed.date(), None
    else:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.date(), parsed.astimezone(UTC)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_lean(first_row: list[str]) -> bool:
    return len(first_row) in (_LEAN_TRADE_FIELDS, _LEAN_QUOTE_FIELDS) and parse_stamp(first_row[0]) is not None


def _csv_columns(header: list[str], name: str) -> dict[str, int]:
    lowered = [h.strip().lower() for h in header]

    def find(candidates: tuple[str, ...]) -> int | None:
        return next((lowered.index(c) for c in candidates if c in lowered), None)

    columns = {
        "date": find(_DATE_HEADERS),
        "open": find(("open",)),
        "high": find(("high",)),
        "low": find(("low",)),
        "close": find(_CLOSE_HEADERS),
        "volume": find(("volume", "vol")),
    }
    missing = [k for k in ("date", "open", "high", "low", "close") if columns[k] is None]
    if missing:
        raise InputError([Problem(name, 1, f"header {header!r} lacks column(s) for {', '.join(missing)}")])
    return {k: v for k, v in columns.items() if v is not None}


def read_price_file(
    path: Path, file_format: str = "auto", price_divisor: float = 1.0, timezone: str = "UTC"
) -> PriceFile:
    """Daily OHLCV rows of one file, prices divided by `price_divisor` (Lean equities store price x 10000)."""
    name = str(path)
    if file_format not in FORMATS:
        raise InputError([Problem(name, 0, f"format {file_format!r} is not one of {', '.join(FORMATS)}")])
    if not price_divisor > 0:
        raise InputError([Problem(name, 0, f"price divisor {price_divisor} must be positive")])
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [(number, fields) for number, fields in enumerate(csv.reader(handle), 1) if fields]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError([Problem(name, 0, f"cannot read file: {exc}")]) from exc
    if not rows:
        raise InputError([Problem(name, 1, "file is empty")])

    lean = file_format == "lean" or (file_format == "auto" and _is_lean(rows[0][1]))
    if lean:
        body = rows
        width = len(rows[0][1])
        if width not in (_LEAN_TRADE_FIELDS, _LEAN_QUOTE_FIELDS):
            raise InputError([Problem(name, 1, f"Lean daily rows have 6 (trade) or 11 (quote) fields, not {width}")])
    else:
        columns = _csv_columns(rows[0][1], name)
        body = rows[1:]
        width = len(rows[0][1])

    records, problems = [], []
    for line, fields in body:
        if len(fields) != width:
            problems.append(Problem(name, line, f"expected {width} fields, found {len(fields)}"))
            continue
        if lean:
            values = [_number(f) for f in fields[1:]]
            if width == _LEAN_QUOTE_FIELDS:
                bid, ask = values[0:4], values[5:9]
                ohlc = [None if b is None or a is None else (b + a) / 2 for b, a in zip(bid, ask, strict=True)]
                volume_text = None
            else:
                ohlc, volume_text = values[0:4], fields[5]
            date_text = fields[0]
        else:
            date_text = fields[columns["date"]]
            ohlc = [_number(fields[columns[k]]) for k in ("open", "high", "low", "close")]
            volume_text = fields[columns["volume"]] if "volume" in columns else None
        stamp = parse_stamp(date_text, timezone)
        if stamp is None:
            problems.append(Problem(name, line, f"date {date_text!r} is not a recognised date"))
            continue
        if any(v is None for v in ohlc):
            problems.append(Problem(name, line, "open/high/low/close is not a number"))
            continue
        volume = None
        if volume_text is not None and volume_text.strip() not in ("", "null", "NaN"):
            volume = _number(volume_text)
            if volume is None:
                problems.append(Problem(name, line, f"volume {volume_text!r} is not a number"))
                continue
        records.append((*stamp, *(v / price_divisor for v in ohlc), volume, name, line))
    frame = pl.DataFrame(records, schema=PRICE_SCHEMA, orient="row")
    repeated = duplicate_problems(frame, ["trade_date"], "trade_date")
    repeated_lines = [p.line for p in repeated]
    frame = frame.filter(~pl.col("line").is_in(repeated_lines))
    return PriceFile(prices=frame.sort("trade_date"), problems=sorted(problems + repeated))
