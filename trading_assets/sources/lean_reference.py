"""Lean's equity reference files: factor files (splits and dividends) and map files (ticker changes).

Both are named by the security's permanent ticker (`aapl.csv`; `aaa.1.csv` for an earlier security that used
the same ticker), headerless, one row per date in increasing order.

- Factor file rows `YYYYMMDD,price_factor,split_factor,reference_price`: a row's factors apply to the dates on or
  before its date and after the previous row's date; dates after the last row (Lean ends files with
  20501231,1,1,0) take 1. Adjusted price = raw x split_factor (split-adjusted) x price_factor (total return).
- Map file rows `YYYYMMDD,ticker[,exchange]`: the ticker was the security's symbol on the dates on or before the
  row's date and after the previous row's; the first row is the first date. The exchange is Lean's primary
  exchange code (Q, N, A, P, Z), absent in old files.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl

from trading_assets.errors import InputError, Problem, raise_if_any

FACTOR_SCHEMA = {
    "security": pl.String,
    "factor_date": pl.Date,
    "price_factor": pl.Float64,
    "split_factor": pl.Float64,
    "reference_price": pl.Float64,
    "source_file": pl.String,
    "source_line": pl.Int32,
}
TICKER_SCHEMA = {
    "security": pl.String,
    "valid_from": pl.Date,
    "valid_until": pl.Date,
    "ticker": pl.String,
    "exchange": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int32,
}
# Lean's primary exchange codes, as the catalog names the exchanges.
EXCHANGES = {"Q": "NASDAQ", "N": "NYSE", "A": "AMEX", "P": "ARCA", "Z": "BATS"}


def security_of(path: Path) -> str:
    """The security a reference file is about: its permanent ticker, upper case (`aaa.1.csv` -> AAA.1)."""
    return path.name.removesuffix(".csv").upper()


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise_if_any([Problem(str(path), 0, f"cannot read the file: {exc}")])
    return [(n, [f.strip() for f in line.split(",")]) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _day(text: str) -> date | None:
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _ordered(path: Path, days: list[tuple[int, date]], problems: list[Problem]) -> None:
    for (_, previous), (line, day) in itertools.pairwise(days):
        if day <= previous:
            problems.append(Problem(str(path), line, f"date {day} is not after the previous row's {previous}"))


def read_factor_file(path: Path) -> pl.DataFrame:
    """The rows of one factor file (FACTOR_SCHEMA); InputError naming every bad line (nothing is read then)."""
    problems, rows = [], []
    for line, fields in _rows(path):
        day = _day(fields[0])
        if len(fields) != 4 or day is None:
            problems.append(Problem(str(path), line, "expected YYYYMMDD,price_factor,split_factor,reference_price"))
            continue
        try:
            price_factor, split_factor, reference = (float(f) for f in fields[1:])
        except ValueError:
            problems.append(Problem(str(path), line, f"not a number in {','.join(fields[1:])}"))
            continue
        for name, value in (("price_factor", price_factor), ("split_factor", split_factor)):
            if not 0 < value < math.inf:
                problems.append(Problem(str(path), line, f"{name} {value} is not positive and finite"))
        if not 0 <= reference < math.inf:
            problems.append(Problem(str(path), line, f"reference_price {fields[3]} is negative or not finite"))
        rows.append((day, price_factor, split_factor, reference, line))
    _ordered(path, [(line, day) for day, *_, line in rows], problems)
    if not rows and not problems:
        problems.append(Problem(str(path), 0, "no rows"))
    raise_if_any(problems)
    frame = pl.DataFrame(
        rows, schema=["factor_date", "price_factor", "split_factor", "reference_price", "source_line"], orient="row"
    )
    return frame.with_columns(security=pl.lit(security_of(path)), source_file=pl.lit(str(path))).select(
        [pl.col(name).cast(dtype) for name, dtype in FACTOR_SCHEMA.items()]
    )


def read_map_file(path: Path) -> pl.DataFrame:
    """The ticker intervals of one map file (TICKER_SCHEMA, `valid_until` inclusive), consecutive rows of the
    same ticker and exchange merged; InputError naming every bad line."""
    problems, rows = [], []
    for line, fields in _rows(path):
        day = _day(fields[0])
        if len(fields) not in (2, 3) or day is None or not fields[1]:
            problems.append(Problem(str(path), line, "expected YYYYMMDD,ticker[,exchange]"))
            continue
        code = fields[2] if len(fields) == 3 else ""
        if code and code not in EXCHANGES:
            problems.append(Problem(str(path), line, f"unknown exchange code {code!r} (known: {', '.join(EXCHANGES)})"))
            continue
        rows.append((day, fields[1].upper(), EXCHANGES.get(code), line))
    _ordered(path, [(line, day) for day, _, _, line in rows], problems)
    if not rows and not problems:
        problems.append(Problem(str(path), 0, "no rows"))
    raise_if_any(problems)
    intervals: list[list] = []
    for index, (day, ticker, exchange, line) in enumerate(rows):
        start = day if index == 0 else date.fromordinal(rows[index - 1][0].toordinal() + 1)
        if intervals and intervals[-1][2:4] == [ticker, exchange]:
            intervals[-1][1] = day
        else:
            intervals.append([start, day, ticker, exchange, line])
    frame = pl.DataFrame(
        intervals, schema=["valid_from", "valid_until", "ticker", "exchange", "source_line"], orient="row"
    )
    return frame.with_columns(security=pl.lit(security_of(path)), source_file=pl.lit(str(path))).select(
        [pl.col(name).cast(dtype) for name, dtype in TICKER_SCHEMA.items()]
    )


def read_folder(folder: Path, reader: Callable[[Path], pl.DataFrame], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every `*.csv` of `folder` read by `reader` (frames of `schema`), the problems of all files reported
    together."""
    frames, problems = [], []
    for path in sorted(folder.glob("*.csv")):
        try:
            frames.append(reader(path))
        except InputError as exc:
            problems.extend(exc.problems)
    raise_if_any(problems)
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)
