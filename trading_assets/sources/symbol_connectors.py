"""Live symbol sources: a Binance-style exchangeInfo endpoint, exchange markets through ccxt, and the
TradingView scanner.

Each returns a `SymbolBatch` or raises `SourceError`; nothing is written until the whole response is read
and every record normalised, so a failing source leaves the catalog as it was.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trading_assets.errors import Problem, raise_if_any
from trading_assets.sources.symbol_files import (
    JsonConstant,
    SymbolBatch,
    binance_exchange_info,
    normalise_record,
    price_scale,
)

_SCANNER_COLUMNS = ["description", "type", "subtype", "pricescale", "minmov", "sector", "industry", "country"]
_TIMEOUT_SECONDS = 30


class SourceError(RuntimeError):
    """A symbol source could not be read."""


def _rebase(urls: Any, base: str) -> Any:
    """ccxt's endpoint table with every scheme and host replaced by `base` (paths kept)."""
    if isinstance(urls, dict):
        return {key: _rebase(value, base) for key, value in urls.items()}
    return re.sub(r"^https?://[^/]+", base.rstrip("/"), urls) if isinstance(urls, str) else urls


def is_url(name: str) -> bool:
    return name.lower().startswith(("http://", "https://"))


def binance_exchange_info_url(url: str, exchanges: dict[str, dict]) -> SymbolBatch:
    """A Binance `exchangeInfo` endpoint (`https://api.binance.com/api/v3/exchangeInfo`) read now: a listing of
    the exchange at the response's serverTime, exactly as a saved snapshot of it (its load judges whether it is
    full). A query naming symbols (`?symbol=ETHBTC`, `?symbols=[...]`) lists only those: never a full listing."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
            document = json.load(response, parse_constant=JsonConstant)
    except (urllib.error.URLError, TimeoutError, ValueError, RecursionError) as error:  # JSON and decoding errors
        raise SourceError(f"Binance exchangeInfo {url}: {error}") from error
    if not isinstance(document, dict) or "serverTime" not in document or not isinstance(document.get("symbols"), list):
        raise SourceError(f"Binance exchangeInfo {url}: unexpected response (no serverTime and symbols list)")
    batch = binance_exchange_info(document, exchanges, url)
    if urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).keys() & {"symbol", "symbols"}:
        batch.full_listings = {}
    return batch


def ccxt_markets(exchange_id: str, exchanges: dict[str, dict], api_url: str | None = None) -> SymbolBatch:
    """Every spot market of a ccxt exchange (`load_markets`), as a full listing of that exchange at now.

    `api_url` points the exchange's endpoints at another host (a mirror, or a recorded response in tests).
    """
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise SourceError(f"ccxt has no exchange {exchange_id!r}")
    client = getattr(ccxt, exchange_id)({"timeout": _TIMEOUT_SECONDS * 1000, "options": {"fetchMarkets": ["spot"]}})
    if api_url:
        client.urls["api"] = _rebase(client.urls["api"], api_url)
    try:
        markets = client.load_markets()
    except ccxt.BaseError as error:
        raise SourceError(f"ccxt {exchange_id}: load_markets failed: {type(error).__name__}: {error}") from error
    exchange = exchange_id.upper()
    records, problems = [], []
    for number, market in enumerate(markets.values(), start=1):
        precision, limits = market.get("precision") or {}, market.get("limits") or {}
        raw = {
            "symbol": f"{exchange}:{market['id']}",
            "base": market.get("base"),
            "quote": market.get("quote"),
            "type": market.get("type"),
            "active": market.get("active"),
            "status": (market.get("info") or {}).get("status"),
            "tick_size": precision.get("price"),
            "lot_size": precision.get("amount"),
            "min_qty": (limits.get("amount") or {}).get("min"),
            "min_notional": (limits.get("cost") or {}).get("min"),
            "contract_size": market.get("contractSize"),
        }
        if raw["tick_size"]:
            raw["pricescale"], raw["minmov"] = price_scale(str(Decimal(str(raw["tick_size"]))))
        record, reason = normalise_record(raw, exchanges)
        if reason:
            problems.append(Problem(f"ccxt:{exchange_id}", number, reason))
        else:
            records.append(record)
    raise_if_any(problems)
    return SymbolBatch(
        records=records, effective_at=datetime.now(UTC), full_listings={exchange: [r["symbol"] for r in records]}
    )


def tradingview_scan(market: str, exchanges: dict[str, dict], base_url: str, page_size: int = 5000) -> SymbolBatch:
    """Symbols of a TradingView scanner market (`america`, `crypto`, ...), page by page.

    The scanner lists what its filters match, not an exchange's whole listing: its records are upserts only.
    Symbols on exchanges the catalog does not know are skipped, not refused (a market spans many venues).
    """
    records: list[dict] = []
    start, total = 0, None
    while total is None or start < total:
        body = json.dumps({"columns": _SCANNER_COLUMNS, "range": [start, start + page_size]}).encode()
        request = urllib.request.Request(
            f"{base_url.rstrip('/')}/{market}/scan", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
                page = json.load(response)
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as error:
            raise SourceError(f"TradingView scanner {market}: {error}") from error
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise SourceError(f"TradingView scanner {market}: unexpected response (no data list)")
        total = int(page.get("totalCount", len(page["data"])))
        for row in page["data"]:
            values = dict(zip(_SCANNER_COLUMNS, row.get("d") or [], strict=False))
            exchange = str(row.get("s", "")).partition(":")[0].upper()
            if exchange not in exchanges:
                continue
            record, reason = normalise_record({"symbol": row.get("s"), **values}, exchanges)
            if reason:
                raise SourceError(f"TradingView scanner {market}: {row.get('s')!r}: {reason}")
            records.append(record)
        if not page["data"]:
            break
        start += page_size
    return SymbolBatch(records=records, effective_at=datetime.now(UTC))
