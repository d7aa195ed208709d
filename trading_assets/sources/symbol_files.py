"""Symbol records from files and exchanges, normalised into catalog observations.

Sources: CSV or JSON files of symbol records (one object per symbol, keys as in the catalog; `symbol`
as `EXCHANGE:SYMBOL`, or a bare symbol with an `exchange` key), and Binance `exchangeInfo` snapshots
(a listing of the exchange at its `serverTime`: whether it is full, and so retires the symbols it does not
name, is judged when it is loaded, see `trading_assets.catalog.judge_listings`).

Bad input is refused as a whole: every problem is an `InputError` naming the file, the line (the record's
number in a JSON file, `symbols[i]` in an exchangeInfo) and the reason, and nothing of the file is used.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from trading_assets.compute.calendars import EVERY_DAY
from trading_assets.compute.scd2 import EXCHANGE_FIELDS, SYMBOL_FIELDS, UTC_TIME
from trading_assets.errors import Problem, raise_if_any

_INTEGER_FIELDS = {name for name, dtype in SYMBOL_FIELDS.items() if dtype == pl.Int64}
_NUMBER_FIELDS = {name for name, dtype in SYMBOL_FIELDS.items() if dtype == pl.Float64}
# The catalog's integers are PostgreSQL bigints.
_MAX_INTEGER = 2**63 - 1


class JsonConstant(str):
    """`NaN`, `Infinity` or `-Infinity` in a JSON file (Python's reader accepts them, JSON does not): kept as
    its text, so the record holding one is refused with its field instead of read as a missing value."""


def _json_kind(value: Any) -> str:
    if isinstance(value, JsonConstant):
        return str(value)
    kinds = ((bool, "true/false"), (dict, "an object"), (list, "a list"), (str, "a string"), (int | float, "a number"))
    return next((kind for types, kind in kinds if isinstance(value, types)), "null")


@dataclass
class SymbolBatch:
    """Normalised upserts of one source read, and the full listings it carries (exchange -> symbols)."""

    records: list[dict[str, Any]]
    effective_at: datetime | None = None  # the source's own time, when it states one
    full_listings: dict[str, list[str]] = field(default_factory=dict)


def _blank(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def price_scale(tick_size: str) -> tuple[int, int]:
    """(pricescale, minmov) of a decimal tick size: 0.05 -> (100, 5), 0.000001 -> (1000000, 1)."""
    tick = Decimal(tick_size).normalize()
    decimals = max(-tick.as_tuple().exponent, 0)
    scale = 10**decimals
    return scale, int(tick * scale)


def normalise_record(raw: dict[str, Any], exchanges: dict[str, dict]) -> tuple[dict | None, str | None]:
    """(observation fields with `symbol`, None) or (None, reason).

    Numbers must be finite (no NaN or Infinity) and fit the catalog's columns; every field holds one value.
    """
    record = {str(k).strip().lower(): (None if _blank(v) else v) for k, v in raw.items() if k}
    for name in ("symbol", *SYMBOL_FIELDS):
        if isinstance(record.get(name), dict | list):
            return None, f"{name} is {_json_kind(record[name])}, not a single value"
    symbol = str(record.get("symbol") or "").strip()
    if not symbol:
        return None, "no symbol"
    exchange = str(record.get("exchange") or "").strip().upper() or None
    if ":" in symbol:
        prefix, _, ticker = symbol.partition(":")
        exchange = exchange or prefix.strip().upper()
        if prefix.strip().upper() != exchange:
            return None, f"symbol {symbol!r} and exchange {exchange!r} disagree"
    else:
        ticker = symbol
    ticker = ticker.strip()
    if not ticker or any(c.isspace() for c in ticker):
        return None, f"symbol {symbol!r} is not EXCHANGE:SYMBOL (the symbol part is empty or holds a space)"
    if not exchange:
        return None, f"symbol {symbol!r} names no exchange (use EXCHANGE:SYMBOL or an exchange column)"
    if exchange not in exchanges:
        return None, f"unknown exchange {exchange!r} (add it with catalog.upsert_exchanges first)"
    out: dict[str, Any] = {"symbol": f"{exchange}:{ticker}", "exchange": exchange}
    for name in SYMBOL_FIELDS:
        value = record.get(name)
        if name == "exchange" or value is None:
            continue
        try:
            if name in _INTEGER_FIELDS | _NUMBER_FIELDS and isinstance(value, bool):
                raise ValueError(value)
            if name in _INTEGER_FIELDS:
                number = Decimal(str(value))
                if not number.is_finite() or number != number.to_integral_value() or number <= 0:
                    return None, f"{name} must be a positive integer, got {value!r}"
                if number > _MAX_INTEGER:
                    return None, f"{name} must be a positive integer up to {_MAX_INTEGER}, got {value!r}"
                out[name] = int(number)
            elif name in _NUMBER_FIELDS:
                number = float(value)
                if not math.isfinite(number) or number < 0 or (number == 0 and name in ("tick_size", "contract_size")):
                    return None, f"{name} must be a positive number, got {value!r}"
                out[name] = number
            elif isinstance(value, JsonConstant):
                return None, f"{name} is {value}, not a value JSON allows"
            elif name == "active":
                out[name] = (
                    value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "t")
                )
            else:
                out[name] = str(value).strip()
        except (InvalidOperation, ValueError, TypeError, OverflowError):
            return None, f"{name} is not a number: {value!r}"
    if "tick_size" not in out and "pricescale" in out and "minmov" in out:
        out["tick_size"] = out["minmov"] / out["pricescale"]
    defaults = exchanges[exchange]
    out.setdefault("timezone", defaults.get("timezone"))
    out.setdefault("country", defaults.get("country"))
    if defaults.get("is_crypto"):
        out.setdefault("profile", "CRYPTO")
        out.setdefault("session", "24x7")
    if "active" not in out and "status" in out:
        out["active"] = out["status"].upper() == "TRADING"
    return {k: v for k, v in out.items() if v is not None}, None


def normalise_exchange(raw: dict[str, Any]) -> tuple[dict | None, str | None]:
    """(exchange observation fields, None) or (None, reason): a known IANA timezone, a known calendar code."""
    record = {k.strip().lower(): (None if _blank(v) else v) for k, v in raw.items() if k}
    exchange = str(record.get("exchange") or "").strip().upper()
    if not re.fullmatch(r"[A-Z0-9_.!-]+", exchange):
        return None, f"exchange code {record.get('exchange')!r} is not like NYSE or BINANCE"
    out: dict[str, Any] = {"exchange": exchange}
    for name in ("country", "description"):
        if record.get(name) is not None:
            out[name] = str(record[name]).strip()
    if record.get("timezone") is not None:
        try:
            ZoneInfo(str(record["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            return None, f"unknown timezone {record['timezone']!r}"
        out["timezone"] = str(record["timezone"])
    if record.get("calendar") is not None:
        calendar = str(record["calendar"]).strip()
        if calendar != EVERY_DAY and calendar not in _calendar_codes():
            return None, f"unknown trading calendar {calendar!r} (an exchange_calendars code, or {EVERY_DAY})"
        out["calendar"] = calendar
    if record.get("is_crypto") is not None:
        value = record["is_crypto"]
        out["is_crypto"] = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "t")
    return out, None


def _calendar_codes() -> set[str]:
    import exchange_calendars

    return set(exchange_calendars.get_calendar_names(include_aliases=True))


def exchange_observations_frame(records: list[dict], effective_at: datetime, source: str) -> pl.DataFrame:
    """Records as rows of catalog.exchange_observations (without ids and recorded times)."""
    schema = {"exchange": pl.String, **EXCHANGE_FIELDS}
    frame = pl.DataFrame([{k: r.get(k) for k in schema} for r in records], schema=schema, orient="row")
    return frame.with_columns(effective_at=pl.lit(effective_at, dtype=UTC_TIME), source=pl.lit(source))


def read_records(path: Path, exchanges: dict[str, dict], source: str = "file") -> SymbolBatch:
    """A CSV or JSON file of symbol records (`source` file), or a Binance exchangeInfo snapshot (binance).

    Refused as a whole (`InputError`, nothing of it is used) when it cannot be read, has another shape, or
    holds any bad record: every problem is listed with its line (CSV), record number (JSON) or `symbols[i]`.
    """
    where = str(path)
    if source not in ("file", "binance"):
        raise_if_any([Problem(where, 1, f"unknown source {source!r} (file or binance)")])
    is_json = source == "binance" or path.suffix.lower() == ".json"
    if path.is_dir():
        raise_if_any([Problem(where, 1, "is a folder, not a file")])
    try:
        if is_json:
            document = json.loads(path.read_text(encoding="utf-8"), parse_constant=JsonConstant)
        else:
            document = pl.read_csv(path, infer_schema=False).to_dicts()
    except json.JSONDecodeError as error:
        raise_if_any([Problem(where, error.lineno, f"unreadable: not JSON ({error.msg}, column {error.colno})")])
    except (OSError, UnicodeDecodeError, RecursionError, pl.exceptions.PolarsError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = "nested too deeply" if isinstance(error, RecursionError) else first_line
        raise_if_any([Problem(where, 1, f"unreadable: {reason}")])
    if not is_json:
        return _records(where, document, exchanges, csv=True)
    is_exchange_info = isinstance(document, dict) and "serverTime" in document and "symbols" in document
    if is_exchange_info:
        return binance_exchange_info(document, exchanges, where)
    if source == "binance":
        shape = "an object without serverTime and symbols" if isinstance(document, dict) else _json_kind(document)
        raise_if_any(
            [Problem(where, 1, f"not a Binance exchangeInfo response (an object with serverTime and symbols): {shape}")]
        )
    rows = document.get("symbols") if isinstance(document, dict) else document
    if not isinstance(rows, list):
        if not isinstance(document, dict):
            shape = f"the file holds {_json_kind(document)}"
        else:
            shape = f"'symbols' is {_json_kind(rows)}" if "symbols" in document else "an object without 'symbols'"
        raise_if_any([Problem(where, 1, f"expected a list of symbol objects (or {{'symbols': [...]}}): {shape}")])
    return _records(where, rows, exchanges, csv=False)


def _records(where: str, rows: list, exchanges: dict[str, dict], *, csv: bool) -> SymbolBatch:
    """The normalised records of a file's rows (numbered by line after a CSV header, by record in JSON), or
    every problem of them."""
    records, problems = [], []
    for number, row in enumerate(rows, start=2 if csv else 1):
        if not isinstance(row, dict):
            problems.append(Problem(where, number, f"record {number} is {_json_kind(row)}, not a symbol object"))
            continue
        if csv and all(_blank(value) for value in row.values()):
            continue  # a blank line of a CSV file
        record, reason = normalise_record(row, exchanges)
        if reason:
            problems.append(Problem(where, number, reason))
        else:
            records.append(record)
    raise_if_any(problems)
    return SymbolBatch(records=records)


def _server_time(value: Any) -> tuple[datetime | None, str | None]:
    """The instant of an exchangeInfo `serverTime` (epoch milliseconds), or (None, reason)."""
    from trading_assets.catalog import to_utc

    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"serverTime is {_json_kind(value)}, not epoch milliseconds"
    try:
        return to_utc(value / 1000), None
    except (ValueError, OverflowError) as error:
        return None, f"serverTime {value!r} (epoch milliseconds): {error}"


def _binance_raw(entry: Any) -> tuple[dict | None, str | None]:
    """The catalog fields of one exchangeInfo symbol object, or (None, reason)."""
    if not isinstance(entry, dict):
        return None, f"is {_json_kind(entry)}, not a symbol object"
    ticker, status, filters = entry.get("symbol"), entry.get("status"), entry.get("filters", [])
    if not isinstance(ticker, str) or not ticker.strip():
        return None, f"no symbol (its 'symbol' is {_json_kind(ticker)})" if "symbol" in entry else "no symbol"
    if not isinstance(status, str) or not status.strip():
        return None, f"no status (its 'status' is {_json_kind(status)})" if "status" in entry else "no status"
    if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
        return None, f"filters is {_json_kind(filters)}, not a list of filter objects"
    by_type = {f.get("filterType"): f for f in filters}
    price, lot = by_type.get("PRICE_FILTER", {}), by_type.get("LOT_SIZE", {})
    notional = by_type.get("MIN_NOTIONAL") or by_type.get("NOTIONAL") or {}
    raw: dict[str, Any] = {
        "symbol": f"BINANCE:{ticker}",
        "base": entry.get("baseAsset"),
        "quote": entry.get("quoteAsset"),
        "type": "spot",
        "status": status,
        "tick_size": price.get("tickSize"),
        "lot_size": lot.get("stepSize"),
        "min_qty": lot.get("minQty"),
        "min_notional": notional.get("minNotional"),
    }
    tick = price.get("tickSize")
    if tick is not None and not isinstance(tick, bool | dict | list):
        try:
            tick_size = Decimal(str(tick))
        except InvalidOperation:
            return None, f"PRICE_FILTER tickSize {tick!r} is not a number"
        # A zero, negative or non-finite tick is refused below, as the catalog's tick_size.
        if tick_size.is_finite() and tick_size > 0:
            raw["pricescale"], raw["minmov"] = price_scale(str(tick_size))
    return raw, None


def binance_exchange_info(document: dict, exchanges: dict[str, dict], where: str = "exchangeInfo") -> SymbolBatch:
    """Every symbol of a Binance exchangeInfo response, and the listing of BINANCE it makes at its serverTime
    (full or partial: a response to `?symbol=ETHBTC` has this shape too; the load judges which).

    Refused as a whole (`InputError`) when the response has another shape or any symbol object is bad: each
    problem names `symbols[i]` (line i + 1) and the symbol."""
    effective_at, reason = _server_time(document.get("serverTime"))
    entries = document.get("symbols")
    if not isinstance(entries, list):
        raise_if_any([Problem(where, 1, f"'symbols' is {_json_kind(entries)}, not a list of symbol objects")])
    problems = [Problem(where, 1, reason)] if reason else []
    records = []
    for number, entry in enumerate(entries, start=1):
        raw, reason = _binance_raw(entry)
        record = None
        if raw is not None:
            record, reason = normalise_record(raw, exchanges)
        if reason:
            ticker = entry.get("symbol") if isinstance(entry, dict) else None
            named = f" ({ticker})" if isinstance(ticker, str) and ticker.strip() else ""
            problems.append(Problem(where, number, f"symbols[{number - 1}]{named}: {reason}"))
        else:
            records.append(record)
    raise_if_any(problems)
    return SymbolBatch(
        records=records, effective_at=effective_at, full_listings={"BINANCE": [r["symbol"] for r in records]}
    )


def observations_frame(
    records: list[dict], effective_at: datetime, source: str, action: str = "upsert"
) -> pl.DataFrame:
    """Records as rows of catalog.symbol_observations (without ids and recorded times)."""
    schema = {"symbol": pl.String, **SYMBOL_FIELDS}
    frame = pl.DataFrame([{k: r.get(k) for k in schema} for r in records], schema=schema, orient="row")
    return frame.with_columns(
        action=pl.lit(action), effective_at=pl.lit(effective_at, dtype=UTC_TIME), source=pl.lit(source)
    )
