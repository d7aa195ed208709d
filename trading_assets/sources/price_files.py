"""Readers for daily price files: headed CSVs in any common spelling, and Lean's headerless daily files.

A file is read once, as lines of text, and parsed column by column, so memory follows the file's size. A
reader returns the rows it can use and, separately, the rows it cannot (line and reason); identical
repeated rows are counted, with a few kept as examples. A file is refused whole (InputError) when its
layout, date order or price scale cannot be told, or when its share of unusable rows shows it is the wrong
file or read with the wrong options.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from trading_assets.compute.bars import PRICES, value_rejects
from trading_assets.compute.validation import DEFAULT_BOUNDS, PriceBounds
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
REJECT_SCHEMA = {"line": pl.Int64, "trade_date": pl.Date, "reason": pl.String}
FORMATS = ("auto", "csv", "lean")
DATE_ORDERS = ("mdy", "dmy")
LEAN_EQUITY_DIVISOR = 10_000.0

_DATE_HEADERS = ("date", "timestamp", "time", "datetime", "day", "")
_CLOSE_HEADERS = ("close", "last", "price")
_LEAN_TRADE_FIELDS = 6  # time, open, high, low, close, volume
_LEAN_QUOTE_FIELDS = 11  # time, bid OHLC, bid size, ask OHLC, ask size
_REPEAT_EXAMPLES = 5
_EXAMPLE_SCHEMA = {"line": pl.Int64, "trade_date": pl.Date, "first_line": pl.Int64}
_BLOCK_BYTES = 16 * 1024 * 1024
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"))
_BOMS += ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_SLASH_DATE = r"^(\d{1,2})/(\d{1,2})/(\d{4})(.*)$"


@dataclass(frozen=True)
class PriceFile:
    file: str
    prices: pl.DataFrame  # PRICE_SCHEMA, one row per trade_date
    rejects: pl.DataFrame  # REJECT_SCHEMA: the rows not used, with why
    data_rows: int  # lines holding a row (not the header, not blank)
    repeats: int  # rows repeating an earlier row exactly (a few are among the rejects as examples)

    @property
    def problems(self) -> list[Problem]:
        return [Problem(self.file, line, reason) for line, reason in self.rejects.select("line", "reason").iter_rows()]


def parse_stamps(text: pl.Expr, timezone: str = "UTC", date_order: str = "mdy") -> tuple[pl.Expr, pl.Expr]:
    """(trade date, UTC instant) of date or timestamp texts: ISO dates and times (`T` or space, `Z` or an
    offset), `M/D/YYYY` (or `D/M/YYYY` with date_order "dmy") and Lean's `YYYYMMDD[ HH:MM]`. A naive time
    is read in `timezone`; an aware one is converted to it for the date. Date-only texts have no instant;
    unreadable texts (or local times that do not exist in the zone) give nulls."""
    value = text.str.strip_chars().str.strip_chars('"')
    slash = value.str.extract_groups(_SLASH_DATE)
    month, day = ("1", "2") if date_order == "mdy" else ("2", "1")
    value = (
        pl.when(value.str.contains(_SLASH_DATE))
        .then(
            pl.concat_str(
                slash.struct["3"],
                pl.lit("-"),
                slash.struct[month].str.zfill(2),
                pl.lit("-"),
                slash.struct[day].str.zfill(2),
                slash.struct["4"],
            )
        )
        .otherwise(value)
        .str.replace(r"^(\d{4})(\d{2})(\d{2})(\s|$)", "${1}-${2}-${3}${4}")
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[T ]+", "${1} ")
        .str.replace(r"Z$", "+00:00")
        .str.replace(r"( \d{1,2}:\d{2})($|[+-])", "${1}:00${2}")
    )
    day_only = value.str.to_date("%Y-%m-%d", strict=False)
    naive = value.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False).dt.replace_time_zone(
        timezone, ambiguous="earliest", non_existent="null"
    )
    aware = value.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%#z", strict=False, time_zone="UTC")
    local = pl.coalesce(naive, aware.dt.convert_time_zone(timezone))
    trade_date = pl.coalesce(day_only, local.dt.date()).alias("trade_date")
    return trade_date, local.dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias("ts")


def parse_stamp(text: str, timezone: str = "UTC", date_order: str = "mdy") -> tuple[date, datetime | None] | None:
    """parse_stamps of one text; None when it is not a date."""
    trade_date, instant = parse_stamps(pl.col("t"), timezone, date_order)
    row = pl.DataFrame({"t": [text]}).select(trade_date, instant).row(0)
    return None if row[0] is None else (row[0], row[1])


def _encoding_of(path: Path, head: bytes, encoding: str | None) -> str:
    """The given encoding, one a byte-order mark names, or UTF-8."""
    chosen = encoding or next((name for bom, name in _BOMS if head.startswith(bom)), "utf-8-sig")
    try:
        codecs.lookup(chosen)
    except LookupError as exc:
        raise InputError([Problem(str(path), 0, f"unknown encoding {chosen!r}")]) from exc
    return chosen


def _line_blocks(path: Path, encoding: str | None) -> Iterator[tuple[pl.DataFrame, str]]:
    """(line number, text) of the file's non-blank lines, a block of about _BLOCK_BYTES at a time, and the
    encoding they were read with. Undecodable bytes become U+FFFD, so that only their lines are rejected."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError([Problem(str(path), 0, f"cannot read file: {exc.strerror or exc}")]) from exc
    with handle:
        head = handle.read(4)
        used = _encoding_of(path, head, encoding)
        # Blocks are cut after a newline byte, which is one only in encodings that extend ASCII (UTF-16 is read whole).
        whole = not "\n".encode(used).endswith(b"\n")
        first_line, pending = 1, head
        while True:
            chunk = handle.read(-1 if whole else _BLOCK_BYTES)
            data, pending = pending + chunk, b""
            if chunk and not whole:
                cut = data.rfind(b"\n") + 1
                data, pending = data[:cut], data[cut:]
            if data:
                lines = (
                    pl.DataFrame({"text": [data.decode(used, errors="replace")]})
                    .select(pl.col("text").str.strip_suffix("\n").str.split("\n"))
                    .explode("text")
                    .with_row_index("line", offset=first_line)
                    .with_columns(pl.col("line").cast(pl.Int64), pl.col("text").str.strip_chars_end("\r"))
                )
                first_line += lines.height
                yield lines.filter(pl.col("text").str.strip_chars() != ""), used
            if not chunk or whole:
                return


def _split(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.with_columns(fields=pl.col("text").str.split(",").list.eval(pl.element().str.strip_chars(' "')))


def _csv_columns(header: list[str], name: str) -> dict[str, int]:
    lowered = [h.strip().strip('"').lower() for h in header]

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


def _is_lean(first: list[str]) -> bool:
    return len(first) in (_LEAN_TRADE_FIELDS, _LEAN_QUOTE_FIELDS) and parse_stamp(first[0]) is not None


def _number(field: pl.Expr) -> pl.Expr:
    return field.str.strip_chars().cast(pl.Float64, strict=False)


def _fields(rows: pl.DataFrame, lean: bool, width: int, columns: dict[str, int]) -> pl.DataFrame:
    """date text, open, high, low, close, volume text of each row, by the file's layout."""
    field = pl.col("fields").list.get
    if lean and width == _LEAN_QUOTE_FIELDS:
        mids = {name: (_number(field(1 + i)) + _number(field(6 + i))) / 2 for i, name in enumerate(PRICES)}
        return rows.select("line", date_text=field(0), **mids, volume_text=pl.lit(None, pl.String))
    if lean:
        prices = {name: _number(field(1 + i)) for i, name in enumerate(PRICES)}
        return rows.select("line", date_text=field(0), **prices, volume_text=field(5))
    prices = {name: _number(field(columns[name])) for name in PRICES}
    volume = field(columns["volume"]) if "volume" in columns else pl.lit(None, pl.String)
    return rows.select("line", date_text=field(columns["date"]), **prices, volume_text=volume)


def _date_order(name: str, dates: pl.Series, date_order: str | None) -> str:
    """The given date order, or month-first; refused when day-first dates (a first number above 12) appear
    and no order was given, since month-first would shift them silently."""
    if date_order is not None:
        if date_order not in DATE_ORDERS:
            raise InputError([Problem(name, 0, f"date order {date_order!r} is not one of {', '.join(DATE_ORDERS)}")])
        return date_order
    first = dates.str.strip_chars().str.extract(_SLASH_DATE, 1).cast(pl.Int32, strict=False)
    day_first = (first > 12).arg_true()
    if day_first.len():
        index = int(day_first[0])
        raise InputError(
            [
                Problem(
                    name,
                    0,
                    f"dates are day-first ({dates[index].strip()!r} cannot be month/day): pass --date-order dmy "
                    "(or --date-order mdy to read them month-first)",
                )
            ]
        )
    return "mdy"


def _price_divisor(name: str, path: Path, lean: bool, prices: pl.DataFrame, divisor: float | None) -> float:
    """The given divisor, or 1; refused for a Lean trade file that looks like an equity file (stored at
    price x 10000: an `equity` path, or whole-number prices in the tens of thousands) unless it is given."""
    if divisor is not None:
        if not divisor > 0:
            raise InputError([Problem(name, 0, f"price divisor {divisor} must be positive")])
        return divisor
    if not lean or prices.is_empty():
        return 1.0
    closes = prices["close"].drop_nulls()
    whole = closes.len() > 0 and bool((closes == closes.round(0)).all()) and float(closes.median()) >= 10_000
    named = any("equity" in part.lower() for part in path.parts[-4:])
    if whole or named:
        why = "its path names equities" if named else f"its prices are whole numbers around {closes.median():,.0f}"
        raise InputError(
            [
                Problem(
                    name,
                    0,
                    f"looks like a Lean equity file ({why}), stored at price x {LEAN_EQUITY_DIVISOR:g}: pass "
                    f"--price-divisor {LEAN_EQUITY_DIVISOR:g} (or --price-divisor 1 if the prices are as they are)",
                )
            ]
        )
    return 1.0


@dataclass
class _Layout:
    """What the first line of a file says of the rest, and the price scale its first rows settle."""

    lean: bool
    width: int
    columns: dict[str, int]
    divisor: float | None = None


def _layout(name: str, first: list[str], file_format: str) -> _Layout:
    if file_format == "lean" or (file_format == "auto" and _is_lean(first)):
        if len(first) not in (_LEAN_TRADE_FIELDS, _LEAN_QUOTE_FIELDS):
            raise InputError(
                [Problem(name, 1, f"Lean daily rows have 6 (trade) or 11 (quote) fields, not {len(first)}")]
            )
        return _Layout(lean=True, width=len(first), columns={})
    return _Layout(lean=False, width=len(first), columns=_csv_columns(first, name))


def _parse_block(
    name: str, rows: pl.DataFrame, used: str, layout: _Layout, timezone: str, date_order: str | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(parsed rows, rejects) of a block of split lines: dates, prices and volume, or why not."""
    undecodable = pl.col("text").str.contains("\ufffd", literal=True)
    fields = pl.col("fields").list.len()
    reason = (
        pl.when(undecodable)
        .then(pl.lit(f"not valid {used} text: give the file's encoding with --encoding"))
        .when(fields != layout.width)
        .then(pl.format("expected {} fields, found {}", pl.lit(layout.width), fields))
    )
    rows = rows.with_columns(reject_reason=reason)
    unreadable = rows.filter(pl.col("reject_reason").is_not_null()).select("line", reason="reject_reason")
    parsed = _fields(rows.filter(pl.col("reject_reason").is_null()), layout.lean, layout.width, layout.columns)

    order = _date_order(name, parsed["date_text"], date_order)
    trade_date, instant = parse_stamps(pl.col("date_text"), timezone, order)
    volume_text = pl.col("volume_text").str.strip_chars()
    no_volume = volume_text.is_null() | volume_text.is_in(["", "null", "NaN", "nan"])
    parsed = parsed.with_columns(
        trade_date=trade_date, ts=instant, volume=pl.when(no_volume).then(None).otherwise(_number(volume_text))
    )
    reason = (
        pl.when(pl.col("trade_date").is_null())
        .then(pl.format("date '{}' is not a recognised date", pl.col("date_text").str.strip_chars()))
        .when(pl.any_horizontal([pl.col(c).is_null() for c in PRICES]))
        .then(pl.lit("open/high/low/close is not a number"))
        .when(~no_volume & pl.col("volume").is_null())
        .then(pl.format("volume '{}' is not a number", volume_text))
    )
    parsed = parsed.with_columns(reject_reason=reason)
    unparsed = parsed.filter(pl.col("reject_reason").is_not_null()).select("line", reason="reject_reason")
    parsed = parsed.filter(pl.col("reject_reason").is_null()).drop("reject_reason", "date_text", "volume_text")
    return parsed, pl.concat([unreadable, unparsed])


@dataclass
class _Duplicates:
    """Rows of a file kept so far (the first of each trade_date), and what repeated them."""

    kept: pl.DataFrame | None = None
    conflicts: list[pl.DataFrame] = field(default_factory=list)
    examples: list[pl.DataFrame] = field(default_factory=list)
    repeats: int = 0

    def add(self, rows: pl.DataFrame) -> None:
        """A repeat of an earlier row's values is harmless and counted, with a few examples; a date given
        again with other values is rejected with both, and the first row of the date is kept."""
        values = ["ts", *PRICES, "volume"]
        ordered = rows if self.kept is None else pl.concat([self.kept, rows])
        first = ordered.unique("trade_date", keep="first", maintain_order=True)
        later = ordered.join(first.select("line"), on="line", how="anti")
        self.kept = first
        if later.is_empty():
            return
        compared = later.join(first.select("trade_date", *values, first_line="line"), on="trade_date")
        same = pl.all_horizontal([pl.col(v).eq_missing(pl.col(f"{v}_right")) for v in values])
        repeated = compared.filter(same)
        self.repeats += repeated.height
        shown = sum(e.height for e in self.examples)
        self.examples.append(repeated.head(max(_REPEAT_EXAMPLES - shown, 0)).select("line", "trade_date", "first_line"))

        def listed(suffix: str) -> pl.Expr:
            parts = [pl.col(f"{v}{suffix}").cast(pl.String).fill_null("") for v in values[1:]]
            return pl.concat_str(parts, separator="/")

        self.conflicts.append(
            compared.filter(~same).select(
                "line",
                "trade_date",
                reason=pl.format(
                    "trade_date {} again with other values: line {} has {}, this line {} "
                    "(open/high/low/close/volume); the first is kept",
                    "trade_date",
                    "first_line",
                    listed("_right"),
                    listed(""),
                ),
            )
        )

    def rejects(self) -> pl.DataFrame:
        examples = pl.concat([pl.DataFrame(schema=_EXAMPLE_SCHEMA), *self.examples]).select(
            "line",
            "trade_date",
            reason=pl.format(
                "repeats line {} exactly ({} repeated rows in the file)", "first_line", pl.lit(self.repeats)
            ),
        )
        return pl.concat([*self.conflicts, examples], how="diagonal_relaxed")


def read_price_file(
    path: Path,
    file_format: str = "auto",
    price_divisor: float | None = None,
    timezone: str = "UTC",
    *,
    encoding: str | None = None,
    date_order: str | None = None,
    bounds: PriceBounds = DEFAULT_BOUNDS,
) -> PriceFile:
    """Daily OHLCV rows of one file, prices divided by `price_divisor` (Lean equities store price x 10000).

    Read a block of lines at a time: memory follows the block and the file's distinct dates, not its size."""
    name = str(path)
    if file_format not in FORMATS:
        raise InputError([Problem(name, 0, f"format {file_format!r} is not one of {', '.join(FORMATS)}")])
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError([Problem(name, 0, f"timezone {timezone!r} is not an IANA time zone")]) from exc
    layout: _Layout | None = None
    duplicates, rejects, data_rows = _Duplicates(), [], 0
    for lines, used in _line_blocks(path, encoding):
        rows = _split(lines)
        if layout is None and rows.height:
            layout = _layout(name, rows["fields"][0].to_list(), file_format)
            rows = rows if layout.lean else rows.slice(1)
        if layout is None or rows.is_empty():
            continue
        data_rows += rows.height
        parsed, unusable = _parse_block(name, rows, used, layout, timezone, date_order)
        if layout.divisor is None and parsed.height:
            layout.divisor = _price_divisor(name, path, layout.lean, parsed, price_divisor)
        if layout.divisor not in (None, 1.0):
            # numpy divides exactly; polars multiplies by the reciprocal (184.45 would read 184.45000000000002).
            parsed = parsed.with_columns([pl.Series(c, parsed[c].to_numpy() / layout.divisor) for c in PRICES])
        acceptable, implausible = value_rejects(parsed, bounds)
        duplicates.add(acceptable)
        rejects += [unusable, implausible.select("line", "trade_date", reason="reject_reason")]
    if layout is None:
        raise InputError([Problem(name, 1, "file is empty")])
    if not data_rows:
        raise InputError([Problem(name, 1, "no rows: the file has a header and nothing else")])
    rejects = (
        pl.concat([*rejects, duplicates.rejects()], how="diagonal_relaxed").select(list(REJECT_SCHEMA)).sort("line")
    )
    _refuse_when_mostly_rejected(name, data_rows, rejects, duplicates.repeats, bounds)
    kept = duplicates.kept if duplicates.kept is not None else pl.DataFrame(schema=PRICE_SCHEMA)
    prices = kept.with_columns(source_file=pl.lit(name)).select([pl.col(c).cast(t) for c, t in PRICE_SCHEMA.items()])
    return PriceFile(name, prices.sort("trade_date"), rejects, data_rows, duplicates.repeats)


def _refuse_when_mostly_rejected(
    name: str, data_rows: int, rejects: pl.DataFrame, repeats: int, bounds: PriceBounds
) -> None:
    unused = rejects.height - min(repeats, _REPEAT_EXAMPLES) + repeats
    if unused <= bounds.reject_allowance or unused <= bounds.max_reject_share * data_rows:
        return
    first_line, _, first_reason = rejects.row(0)
    repeated = f" ({repeats} exact repeats)" if repeats else ""
    raise InputError(
        [
            Problem(
                name,
                first_line,
                f"{unused} of {data_rows} rows ({unused / data_rows:.0%}) cannot be used{repeated}, more than "
                f"the {bounds.max_reject_share:.0%} a file may have; nothing of the file was loaded. First: "
                f"{first_reason}",
            )
        ]
    )
