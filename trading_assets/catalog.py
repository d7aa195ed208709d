"""Point-in-time symbol lookups and catalog writes, for backtests and scripts.

    from trading_assets import catalog
    catalog.get_instrument("BINANCE:ETHBTC", as_of="2019-01-01")   # the version valid then, or None
    catalog.list_active_symbols("BINANCE", as_of=1600000000)        # epoch seconds, dates, datetimes
    catalog.get_instrument("BINANCE:ETHBTC", as_of="2019-01-01", as_known_at="2019-01-02")  # no look-ahead
    catalog.upsert_symbols([{"symbol": "BINANCE:ETHBTC", "tick_size": 1e-6}], effective_at="2020-01-01")
    catalog.retire_symbols(["BINANCE:ETHBTC"])

Lookups read an in-memory copy of `catalog.symbols`, reloaded whenever `symbols.parquet` in the
lakehouse changes (every committed catalog write rewrites it), so they cost a file stat, not a query.
Writes append to the observation log and re-derive the symbols they touch in one transaction under the
catalog's lock; when the versions pass the catalog's blocking checks they are committed, the lakehouse files
are published and the write is recorded on the Dagster instance (a materialization of the catalog assets
reported by the API), so the UI shows it like a run's.

Points in time (`as_of`, `effective_at`) lie from 1900 to 2200 UTC: anything else is refused (ValueError), as
is epoch milliseconds passed for seconds.

A listing of an exchange (a Binance exchangeInfo, a ccxt load_markets) retires the exchange's symbols it does
not name only when it is full: marked so (`full_listing`), or covering at least
TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE (default half) of the exchange's symbols active at its time
(`judge_listings`). A partial one (`GET /api/v3/exchangeInfo?symbol=ETHBTC`) only upserts what it names.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

from trading_assets.compute.scd2 import version_problems
from trading_assets.config import Settings
from trading_assets.errors import Problem, raise_if_any
from trading_assets.io import catalog_store
from trading_assets.io.postgres import connect
from trading_assets.sources.symbol_files import (
    exchange_observations_frame,
    normalise_exchange,
    normalise_record,
    observations_frame,
)

# Epoch seconds beyond this (year 5138) are milliseconds or nanoseconds passed by mistake.
_MAX_EPOCH_SECONDS = 1e11
# The instants the catalog speaks about: symbol versions, loads and lookups.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_RANGE = f"from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} UTC"
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def to_utc(moment: datetime | date | str | float | int) -> datetime:
    """An aware UTC datetime from an aware or naive-as-UTC datetime, a date (its midnight UTC), an ISO
    string, or epoch seconds; ValueError for anything else or outside 1900..2200 UTC."""
    if isinstance(moment, bool):
        raise TypeError("a boolean is not a point in time")
    if isinstance(moment, int | float):
        if not math.isfinite(moment) or abs(moment) >= _MAX_EPOCH_SECONDS:
            raise ValueError(f"{moment} is not epoch seconds (milliseconds or nanoseconds?)")
        if not EARLIEST.timestamp() <= moment < LATEST.timestamp():
            raise ValueError(f"epoch seconds {moment} are not a time {_RANGE}")
        return datetime.fromtimestamp(moment, tz=UTC)
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{moment!r} is not an ISO time or date (e.g. 2020-01-31 or 2020-01-31T12:00Z)") from None
    try:
        if isinstance(moment, datetime):
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        elif isinstance(moment, date):
            moment = datetime.combine(moment, time(), tzinfo=UTC)
        else:
            raise TypeError(f"cannot read {moment!r} as a point in time")
    except OverflowError:
        raise ValueError(f"{moment} is not a time {_RANGE}") from None
    if not EARLIEST <= moment < LATEST:
        raise ValueError(f"{moment.isoformat()} is not a time {_RANGE}")
    return moment


def parse_moment(text: str) -> datetime:
    """A point in time typed by a person (the CLI's --at and --effective-at): ISO time or date, or epoch
    seconds; ValueError with the reason otherwise."""
    text = text.strip()
    return to_utc(float(text) if _NUMBER.fullmatch(text) else text)


class SymbolCatalog:
    """All symbol versions in memory, indexed for as-of lookups by bisection; the ticker history too (spans of
    security, valid_from, valid_until, symbol), read by `spans` on the first lookup that needs it."""

    def __init__(self, versions: pl.DataFrame, spans: Callable[[], pl.DataFrame] | None = None) -> None:
        self._rows: dict[str, list[dict[str, Any]]] = {}
        for row in versions.sort("symbol", "valid_from").iter_rows(named=True):
            self._rows.setdefault(row["symbol"], []).append(row)
        self._starts = {symbol: [r["valid_from"] for r in rows] for symbol, rows in self._rows.items()}
        self._read_spans = spans
        self._spans: dict[str, list[dict[str, Any]]] | None = None

    def securities_of(self, symbol: str) -> dict[str, list[dict[str, Any]]]:
        """The ticker-history spans of every security that ever traded as `symbol`, by security."""
        if self._spans is None:
            self._spans = {}
            if self._read_spans is not None:
                for span in self._read_spans().sort("security", "valid_from").iter_rows(named=True):
                    self._spans.setdefault(span["security"], []).append(span)
        return {
            security: spans
            for security, spans in self._spans.items()
            if any(span["symbol"] == symbol for span in spans)
        }

    def get_instrument(self, symbol: str, as_of: Any = None) -> dict[str, Any] | None:
        rows = self._rows.get(symbol)
        if not rows:
            return None
        if as_of is None:
            return dict(rows[-1]) if rows[-1]["valid_until"] is None else None
        moment = to_utc(as_of)
        index = bisect_right(self._starts[symbol], moment) - 1
        if index < 0:
            return None
        row = rows[index]
        return dict(row) if row["valid_until"] is None or row["valid_until"] > moment else None

    def list_active_symbols(self, exchange: str | None = None, as_of: Any = None) -> list[str]:
        found = []
        for symbol in self._rows:
            row = self.get_instrument(symbol, as_of)
            if row and row["active"] and (exchange is None or row["exchange"] == exchange.upper()):
                found.append(symbol)
        return sorted(found)


# (database setting, embedded data folder, lakehouse) -> (identity of symbols.parquet when loaded, catalog)
_loaded: dict[tuple[str | None, Path, Path], tuple[tuple | None, SymbolCatalog]] = {}


def _url(settings: Settings) -> str:
    from trading_assets.io.database import ready_database_url

    return ready_database_url(settings.database_url, settings.embedded_pgdata)


def _file_identity(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _read_catalog(settings: Settings, versions: Callable[[psycopg.Connection], pl.DataFrame]) -> SymbolCatalog:
    url = _url(settings)

    def spans() -> pl.DataFrame:
        with connect(url) as conn:
            return catalog_store.ticker_spans(conn)

    with connect(url) as conn:
        return SymbolCatalog(versions(conn), spans)


def _catalog(settings: Settings | None) -> SymbolCatalog:
    settings = settings or Settings.from_env()
    key = (settings.database_url, settings.embedded_pgdata, settings.lakehouse)
    identity = _file_identity(settings.lakehouse / "symbols.parquet")
    cached = _loaded.get(key)
    if cached is None or cached[0] != identity:
        cached = (identity, _read_catalog(settings, catalog_store.read_symbols))
        _loaded[key] = cached
    return cached[1]


def _catalog_known_at(settings: Settings | None, as_known_at: Any) -> SymbolCatalog:
    """The catalog as the platform held it at `as_known_at` (read from the knowledge history, not cached)."""
    moment = to_utc(as_known_at)
    return _read_catalog(
        settings or Settings.from_env(), lambda conn: catalog_store.read_symbols_known_at(conn, moment)
    )


def get_instrument(
    symbol: str, as_of: Any = None, *, as_known_at: Any = None, settings: Settings | None = None
) -> dict[str, Any] | None:
    """The version of `symbol` valid at `as_of` (default: the current one); None before its first version.
    When `symbol` has none then, the ticker history answers: the version of the symbol that the security
    trading as `symbol` had then (with `security`). With `as_known_at`, as the catalog knew it then: a snapshot
    recorded later is not seen. The ticker history is read once per catalog version (each catalog write
    publishes a new one)."""
    catalog = _catalog(settings) if as_known_at is None else _catalog_known_at(settings, as_known_at)
    found = catalog.get_instrument(symbol, as_of)
    if found is not None or as_of is None:
        return found
    return _security_version(catalog, symbol, to_utc(as_of))


def _security_version(catalog: SymbolCatalog, symbol: str, moment: datetime) -> dict[str, Any] | None:
    """What `symbol` was at `moment` by the ticker history: the catalog version of the symbol that its
    security had then, else the ticker-history span itself; None when the security did not trade then."""
    securities = catalog.securities_of(symbol)
    if not securities:
        return None
    day = moment.date()

    def during(span: dict[str, Any]) -> bool:
        return span["valid_from"] <= day <= span["valid_until"]

    def naming(security: str) -> list[dict[str, Any]]:
        return [span for span in securities[security] if span["symbol"] == symbol]

    # The security trading as `symbol` that day, else the last one that did.
    covering = [security for security in securities if any(during(span) for span in naming(security))]
    security = covering[0] if covering else max(securities, key=lambda s: naming(s)[-1]["valid_from"])
    span = next((span for span in securities[security] if during(span)), None)
    if span is None or span["symbol"] is None:
        return None
    version = catalog.get_instrument(span["symbol"], moment)
    if version is None:
        exchange, ticker = span["symbol"].split(":", 1)
        until = span["valid_until"] + timedelta(days=1)
        version = {
            "symbol": span["symbol"],
            "exchange": exchange,
            "ticker": ticker,
            "valid_from": datetime.combine(span["valid_from"], time(), tzinfo=UTC),
            "valid_until": None if until >= LATEST.date() else datetime.combine(until, time(), tzinfo=UTC),
            "active": True,
        }
    return {**version, "security": security}


def list_active_symbols(
    exchange: str | None = None, as_of: Any = None, *, as_known_at: Any = None, settings: Settings | None = None
) -> list[str]:
    catalog = _catalog(settings) if as_known_at is None else _catalog_known_at(settings, as_known_at)
    return catalog.list_active_symbols(exchange, as_of)


def publish_lakehouse(url: str, lakehouse: Path) -> None:
    """symbols.parquet and exchanges.parquet of the committed versions, each replaced atomically (temp file +
    rename). Under the catalog's lock, so the last publisher always writes the newest versions."""
    lakehouse.mkdir(parents=True, exist_ok=True)
    with connect(url, autocommit=True) as conn, catalog_store.catalog_session_lock(conn):
        for name, frame in (
            ("symbols", catalog_store.read_symbols(conn)),
            ("exchanges", catalog_store.read_exchanges(conn)),
        ):
            target = lakehouse / f"{name}.parquet"
            temporary = target.with_name(f".{name}.parquet.tmp")
            frame.write_parquet(temporary)
            temporary.replace(target)


DEFAULT_MIN_LISTING_SHARE = 0.5


@dataclass(frozen=True)
class ListingVerdict:
    """Whether a source's listing of an exchange is full, so retires the exchange's symbols it does not name."""

    exchange: str
    listed: int  # symbols the listing names
    active: int  # symbols of the exchange active at the listing's time, before it
    absent: int  # of those, the ones it does not name: what it retires when full
    share: float  # of the active ones, the share it names (1 when none is active)
    full: bool
    warn: bool  # partial without being marked so: a listing that may have been meant as full
    reason: str


def judge_listings(
    conn: psycopg.Connection,
    listings: dict[str, list[str]],
    effective_at: datetime,
    *,
    marked: bool | None = None,
    min_share: float = DEFAULT_MIN_LISTING_SHARE,
) -> list[ListingVerdict]:
    """Judge each listing (exchange -> the symbols it names at `effective_at`) as the catalog stands.

    `marked` True: every listing is full (the source says so); False: every one is partial (only upserts);
    None: a listing is full when it names at least `min_share` of the exchange's symbols active at its time
    (TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE), partial otherwise, with a warning: a response to
    `exchangeInfo?symbol=ETHBTC` has the shape of a full listing and must not retire the rest of the exchange.
    """
    verdicts = []
    for exchange, members in listings.items():
        active = catalog_store.active_symbols_at(conn, exchange, effective_at)
        absent = len(active - set(members))
        share = (len(active) - absent) / len(active) if active else 1.0
        named = f"names {len(members)} symbol(s), {len(active) - absent} of the {len(active)} active {exchange} ones"
        if marked is not None:
            full, warn = marked, False
            reason = f"marked {'full' if marked else 'partial'} (full_listing={str(marked).lower()}): it {named}"
        else:
            full, warn = share >= min_share, share < min_share
            compared = f"{share:.1%} {'>=' if full else '<'} {min_share:.0%}, TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE"
            reason = f"{'full' if full else 'a partial listing'}: it {named} ({compared})"
        if full:
            reason += f"; the {absent} it does not name are retired"
        else:
            reason += f"; its symbols are upserted, none of the {absent} it does not name is retired"
            if warn:
                reason += " (load it with full_listing=true if the exchange really delisted them)"
        verdicts.append(ListingVerdict(exchange, len(members), len(active), absent, share, full, warn, reason))
    return verdicts


def apply_observations(
    conn: psycopg.Connection,
    records: list[dict],
    effective_at: datetime,
    source: str,
    *,
    action: str = "upsert",
    full_listings: dict[str, list[str]] | None = None,
) -> dict[str, int]:
    """Log what a source said and re-derive the symbols it concerns; the caller holds the transaction.

    `full_listings` (exchange -> symbols) retire what they do not name: pass only the listings
    `judge_listings` found full."""
    catalog_store.lock_catalog(conn)
    added = catalog_store.append_observations(conn, observations_frame(records, effective_at, source, action))
    touched = {r["symbol"] for r in records}
    for exchange, members in (full_listings or {}).items():
        catalog_store.record_full_listing(conn, exchange, effective_at, members, source)
        touched |= catalog_store.symbols_of_exchange(conn, exchange)
    versions = catalog_store.rederive_symbols(conn, sorted(touched))
    catalog_store.rederive_exchanges(conn)
    return {"observations": added, "symbols": len(touched), "versions": versions}


def _commit_checked(conn: psycopg.Connection, source: str) -> None:
    """Commit the catalog write unless the versions break a blocking check (then nothing changes)."""
    problems = {name: n for name, n in version_problems(catalog_store.read_symbols(conn)).items() if n}
    if problems:
        conn.rollback()
        raise_if_any([Problem(source, 0, f"the symbol versions would break the catalog's checks: {problems}")])
    conn.commit()


def _publish(settings: Settings, url: str, counts: dict[str, int]) -> None:
    """Publish the lakehouse files and record the write on the Dagster instance."""
    import dagster as dg

    from trading_assets.defs.catalog.assets import CATALOG_KEYS
    from trading_assets.io.database import prepare_dagster_environment

    publish_lakehouse(url, settings.lakehouse)
    prepare_dagster_environment(settings, url)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        for key in CATALOG_KEYS:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key, metadata={"written_by": "trading_assets.catalog (Python API)", **counts})
            )


def _write(settings: Settings, records: list[dict], effective_at: Any, action: str) -> dict[str, int]:
    url = _url(settings)
    moment = to_utc(effective_at) if effective_at is not None else datetime.now(UTC)
    with connect(url) as conn:
        counts = apply_observations(conn, records, moment, "api", action=action)
        _commit_checked(conn, f"{action}_symbols")
    _publish(settings, url, counts)
    return counts


def upsert_exchanges(
    records: Iterable[dict[str, Any]], effective_at: Any = None, *, settings: Settings | None = None
) -> dict[str, int]:
    """Record exchanges (exchange, country, timezone, is_crypto, calendar, description) as of `effective_at`
    (default now); symbols can then name them. Missing fields keep their value."""
    settings = settings or Settings.from_env()
    normalised, problems = [], []
    for number, raw in enumerate(records, start=1):
        record, reason = normalise_exchange(raw)
        if reason:
            problems.append(Problem("upsert_exchanges", number, reason))
        else:
            normalised.append(record)
    raise_if_any(problems)
    url = _url(settings)
    moment = to_utc(effective_at) if effective_at is not None else datetime.now(UTC)
    with connect(url) as conn:
        catalog_store.lock_catalog(conn)
        added = catalog_store.append_exchange_observations(conn, exchange_observations_frame(normalised, moment, "api"))
        versions = catalog_store.rederive_exchanges(conn)
        _commit_checked(conn, "upsert_exchanges")
    counts = {"observations": added, "versions": versions}
    _publish(settings, url, counts)
    return counts


def upsert_symbols(
    records: Iterable[dict[str, Any]], effective_at: Any = None, *, settings: Settings | None = None
) -> dict[str, int]:
    """Record what is known about symbols as of `effective_at` (default now); missing fields keep their value."""
    settings = settings or Settings.from_env()
    url = _url(settings)
    with connect(url) as conn:
        exchanges = catalog_store.known_exchanges(conn)
    normalised, problems = [], []
    for number, raw in enumerate(records, start=1):
        record, reason = normalise_record(raw, exchanges)
        if reason:
            problems.append(Problem("upsert_symbols", number, reason))
        else:
            normalised.append(record)
    raise_if_any(problems)
    return _write(settings, normalised, effective_at, "upsert")


def retire_symbols(
    symbols: Iterable[str], effective_at: Any = None, *, settings: Settings | None = None
) -> dict[str, int]:
    """Mark symbols delisted from `effective_at` (default now); retiring an inactive symbol changes nothing."""
    settings = settings or Settings.from_env()
    wanted = list(dict.fromkeys(symbols))
    with connect(_url(settings)) as conn:
        known = catalog_store.observed_symbols(conn, wanted)
    raise_if_any(
        [Problem("retire_symbols", i, f"unknown symbol {s!r}") for i, s in enumerate(wanted, 1) if s not in known]
    )
    return _write(settings, [{"symbol": s} for s in wanted], effective_at, "retire")
