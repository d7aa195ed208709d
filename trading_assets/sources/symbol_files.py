"""Symbol records from files and exchanges, normalised into catalog observations.

Sources: CSV or JSON files of symbol records (one object per symbol, keys as in the catalog; `symbol`
as `EXCHANGE:SYMBOL`, or a bare symbol with an `exchange` key), and Binance `exchangeInfo` snapshots
(a full listing of the exchange at its `serverTime`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    """(observation fields with `symbol`, None) or (None, reason)."""
    record = {k.strip().lower(): (None if _blank(v) else v) for k, v in raw.items() if k}
    symbol = str(record.get("symbol") or "").strip()
    if not symbol:
        return None, "no symbol"
    exchange = (record.get("exchange") or "").strip().upper() or None
    if ":" in symbol:
        prefix, _, ticker = symbol.partition(":")
        exchange = exchange or prefix.strip().upper()
        if prefix.strip().upper() != exchange:
            return None, f"symbol {symbol!r} and exchange {exchange!r} disagree"
    else:
        ticker = symbol
    if not exchange:
        return None, f"symbol {symbol!r} names no exchange (use EXCHANGE:SYMBOL or an exchange column)"
    if exchange not in exchanges:
        return None, f"unknown exchange {exchange!r} (add it with catalog.upsert_exchanges first)"
    out: dict[str, Any] = {"symbol": f"{exchange}:{ticker.strip()}", "exchange": exchange}
    for name in SYMBOL_FIELDS:
        value = record.get(name)
        if name == "exchange" or value is None:
            continue
        try:
            if name in _INTEGER_FIELDS:
                number = Decimal(str(value))
                if number != number.to_integral_value() or number <= 0:
                    return None, f"{name} must be a positive integer, got {value!r}"
                out[name] = int(number)
            elif name in _NUMBER_FIELDS:
                number = float(value)
                if not math.isfinite(number) or number < 0 or (number == 0 and name in ("tick_size", "contract_size")):
                    return None, f"{name} must be a positive number, got {value!r}"
                out[name] = number
            elif name == "active":
                out[name] = (
                    value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "t")
                )
            else:
                out[name] = str(value).strip()
        except (InvalidOperation, ValueError):
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
    """A CSV or JSON file of symbol records (`source` file), or a Binance exchangeInfo snapshot (binance)."""
    if source not in ("file", "binance"):
        raise_if_any([Problem(str(path), 1, f"unknown source {source!r} (file or binance)")])
    try:
        if source == "binance" or path.suffix.lower() == ".json":
            document = json.loads(path.read_text())
            is_exchange_info = isinstance(document, dict) and "serverTime" in document and "symbols" in document
            if source == "binance" and not is_exchange_info:
                raise_if_any([Problem(str(path), 1, "not a Binance exchangeInfo response (serverTime, symbols)")])
            if is_exchange_info:
                return binance_exchange_info(document, exchanges, str(path))
            rows = document.get("symbols", []) if isinstance(document, dict) else document
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise_if_any([Problem(str(path), 1, "expected a list of symbol objects (or {'symbols': [...]})")])
        else:
            rows = pl.read_csv(path, infer_schema=False).to_dicts()
    except (OSError, json.JSONDecodeError, pl.exceptions.PolarsError) as error:
        raise_if_any([Problem(str(path), 1, f"unreadable: {error}")])
    records, problems = [], []
    for number, row in enumerate(rows, start=2 if path.suffix.lower() != ".json" else 1):
        record, reason = normalise_record(row, exchanges)
        if reason:
            problems.append(Problem(str(path), number, reason))
        else:
            records.append(record)
    raise_if_any(problems)
    return SymbolBatch(records=records)


def _filters(entry: dict) -> dict[str, dict]:
    return {f.get("filterType"): f for f in entry.get("filters", [])}


def binance_exchange_info(document: dict, exchanges: dict[str, dict], where: str = "exchangeInfo") -> SymbolBatch:
    """Every symbol of a Binance exchangeInfo response; the response is a full listing at its serverTime."""
    effective_at = datetime.fromtimestamp(document["serverTime"] / 1000, tz=UTC)
    records, problems = [], []
    for number, entry in enumerate(document["symbols"], start=1):
        filters = _filters(entry)
        price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
        notional = filters.get("MIN_NOTIONAL") or filters.get("NOTIONAL") or {}
        raw: dict[str, Any] = {
            "symbol": f"BINANCE:{entry.get('symbol', '')}",
            "base": entry.get("baseAsset"),
            "quote": entry.get("quoteAsset"),
            "type": "spot",
            "status": entry.get("status"),
            "tick_size": price.get("tickSize"),
            "lot_size": lot.get("stepSize"),
            "min_qty": lot.get("minQty"),
            "min_notional": notional.get("minNotional"),
        }
        if price.get("tickSize") and Decimal(price["tickSize"]) > 0:
            raw["pricescale"], raw["minmov"] = price_scale(price["tickSize"])
        record, reason = normalise_record(raw, exchanges)
        if reason:
            problems.append(Problem(where, number, f"symbols[{number - 1}]: {reason}"))
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
