"""The symbol and exchange catalogs: point-in-time versions in PostgreSQL and the lakehouse parquet files."""

import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from trading_assets.catalog import ListingVerdict, apply_observations, judge_listings, publish_lakehouse, to_utc
from trading_assets.compute.scd2 import version_problem_rows
from trading_assets.config import Settings
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview, table_metadata
from trading_assets.io import catalog_store
from trading_assets.sources.symbol_connectors import (
    binance_exchange_info_url,
    ccxt_markets,
    is_url,
    tradingview_scan,
)
from trading_assets.sources.symbol_files import SymbolBatch, read_records

GROUP = "catalog"
SYMBOLS = dg.AssetKey([GROUP, "symbols"])
EXCHANGES = dg.AssetKey([GROUP, "exchanges"])
SYMBOLS_PARQUET = dg.AssetKey([GROUP, "symbols.parquet"])
EXCHANGES_PARQUET = dg.AssetKey([GROUP, "exchanges.parquet"])
CATALOG_KEYS = [EXCHANGES, SYMBOLS, EXCHANGES_PARQUET, SYMBOLS_PARQUET]
# The op of the catalog multi-asset (run config goes under this name).
CATALOG_OP = "catalog"
CATALOG_CODE_VERSION = "2"
SYMBOL_CHECKS = {
    "one_current_version": "at most one current version per symbol",
    "versions_contiguous": "each symbol's versions follow one another without gap or overlap",
    "bounds_in_utc": "validity bounds are UTC instants in what symbols.parquet receives",
}
SYMBOL_CHECK_KEYS = [dg.AssetCheckKey(SYMBOLS, name) for name in SYMBOL_CHECKS]
# WARN, evaluated by the load itself: the listings it read that looked partial and so retired nothing.
LISTING_CHECK = "listing_complete"
LISTING_CHECK_KEY = dg.AssetCheckKey(SYMBOLS, LISTING_CHECK)


class SymbolSource(dg.Config):
    """One input of its own kind (as `source` below); `full_listing` as below, for this input."""

    source: str
    input: str
    full_listing: bool | None = None


class SymbolSourcesConfig(dg.Config):
    """What to load, by `source`: file = CSV/JSON symbol record files, binance = exchangeInfo snapshot files or
    endpoint URLs, ccxt = exchange ids (load_markets), tradingview = scanner markets; `sources` adds inputs of
    other kinds (the daily schedule lists the configured ones there). Nothing re-derives everything.
    `effective_at` (ISO time) overrides the snapshot's own time; without either, now.

    `full_listing` is the marker of a full listing, for the listings the inputs carry (binance, ccxt): true =
    each is the exchange's full listing and retires the symbols it does not name; false = each is partial and
    only upserts; unset = judged by its coverage: full when it names at least
    TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE (default 0.5) of the exchange's symbols active at its time,
    otherwise partial, with the WARN check `listing_complete` failing (a response to
    `exchangeInfo?symbol=ETHBTC` looks like a full listing of one symbol)."""

    inputs: list[str] = []
    source: str = "file"
    sources: list[SymbolSource] = []
    effective_at: str | None = None
    full_listing: bool | None = None


def symbol_check_results(versions: pl.DataFrame) -> list[dg.AssetCheckResult]:
    """The blocking checks of the symbol versions, evaluated before anything is committed or published."""
    problems = version_problem_rows(versions)
    offending = {
        "one_current_version": problems["several_current"],
        "versions_contiguous": pl.concat([problems["not_contiguous"], problems["empty_or_reversed"]]),
    }
    failing = {
        **{name: rows.height for name, rows in offending.items()},
        "bounds_in_utc": int(versions.schema["valid_from"].time_zone != "UTC"),
    }
    # What a person should look at: the symbols (or, for the bounds, the columns and their time zone).
    samples = {name: ", ".join(bad["symbol"].unique(maintain_order=True).head(20)) for name, bad in offending.items()}
    samples["bounds_in_utc"] = ", ".join(
        f"{column} ({versions.schema[column].time_zone})"
        for column in ("valid_from", "valid_until")
        if versions.schema[column].time_zone != "UTC"
    )
    return [
        dg.AssetCheckResult(
            asset_key=SYMBOLS,
            check_name=name,
            passed=bad == 0,
            metadata={"violations": bad, "sample": samples[name]},
        )
        for name, bad in failing.items()
    ]


def listing_metadata(listings: list[tuple[str, ListingVerdict]]) -> dict[str, Any]:
    """The verdicts on the load's listings (input, verdict), and the partial ones it was not told about."""
    partial = [(where, verdict) for where, verdict in listings if verdict.warn]
    return {
        "partial_listings": len(partial),
        "exchanges": ", ".join(dict.fromkeys(verdict.exchange for _, verdict in partial)),
        "sample": "; ".join(f"{where}: {verdict.reason}" for where, verdict in partial[:20]),
        "listings": dg.MetadataValue.json([{"input": where, **asdict(verdict)} for where, verdict in listings]),
    }


def listing_check_result(listings: list[tuple[str, ListingVerdict]]) -> dg.AssetCheckResult:
    """WARN when a listing of the load was judged partial without being marked so: it retired nothing."""
    metadata = listing_metadata(listings)
    return dg.AssetCheckResult(
        asset_key=SYMBOLS,
        check_name=LISTING_CHECK,
        passed=metadata["partial_listings"] == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def build_catalog_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    def _read_source(source: str, name: str, exchanges: dict[str, dict]) -> SymbolBatch:
        if source == "binance" and is_url(name):
            return binance_exchange_info_url(name, exchanges)
        if source == "ccxt":
            return ccxt_markets(name, exchanges, settings.ccxt_api_url)
        if source == "tradingview":
            return tradingview_scan(name, exchanges, settings.tradingview_url)
        return read_records(Path(name), exchanges, source)

    def parquet_spec(key: dg.AssetKey, table: dg.AssetKey) -> dg.AssetSpec:
        path = settings.lakehouse / key.path[-1]
        return dg.AssetSpec(
            key,
            deps=[table],
            group_name=GROUP,
            kinds={"parquet"},
            code_version=CATALOG_CODE_VERSION,
            metadata={"dagster/uri": path.as_uri()},
            skippable=True,
            description=f"{table.to_user_string()} in the lakehouse, replaced atomically after each committed "
            "write whose blocking checks passed.",
        )

    @dg.multi_asset(
        name=CATALOG_OP,
        specs=[
            dg.AssetSpec(
                EXCHANGES,
                group_name=GROUP,
                kinds={"postgres"},
                code_version=CATALOG_CODE_VERSION,
                skippable=True,
                description="Exchange versions (country, timezone, crypto or not, trading calendar), derived from "
                "catalog.exchange_observations and seeded with well-known venues.",
            ),
            dg.AssetSpec(
                SYMBOLS,
                deps=[EXCHANGES],
                group_name=GROUP,
                kinds={"postgres"},
                code_version=CATALOG_CODE_VERSION,
                skippable=True,
                description="Symbol versions [valid_from, valid_until) in UTC, derived from the append-only "
                "observation log (catalog.symbol_observations); exchanges give their defaults.",
            ),
            parquet_spec(EXCHANGES_PARQUET, EXCHANGES),
            parquet_spec(SYMBOLS_PARQUET, SYMBOLS),
        ],
        check_specs=[
            *(
                dg.AssetCheckSpec(name, asset=SYMBOLS, blocking=True, description=text)
                for name, text in SYMBOL_CHECKS.items()
            ),
            dg.AssetCheckSpec(
                LISTING_CHECK,
                asset=SYMBOLS,
                description="every exchange listing the load read was full, or marked partial: a listing naming "
                "less than TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE of the exchange's active symbols retired nothing",
            ),
        ],
    )
    def catalog(context: dg.AssetExecutionContext, config: SymbolSourcesConfig, warehouse: Warehouse):
        """Load symbol records and derive the versions; publish the parquet files only when the blocking checks
        pass (otherwise the write is rolled back and nothing is published). A listing judged partial retires
        nothing (see SymbolSourcesConfig.full_listing)."""
        started = time.perf_counter()
        reads = [(config.source, name, config.full_listing) for name in config.inputs]
        reads += [
            (s.source, s.input, config.full_listing if s.full_listing is None else s.full_listing)
            for s in config.sources
        ]
        counts = {"observations": 0, "inputs": len(reads)}
        listings: list[tuple[str, ListingVerdict]] = []
        with warehouse.transaction() as conn:
            exchanges = catalog_store.known_exchanges(conn)
            # Taken before reading what is active, so the run's delistings are its own.
            catalog_store.lock_catalog(conn)
            active_before = catalog_store.active_symbols(conn)
            for source, name, marked in reads:
                batch = _read_source(source, name, exchanges)
                moment = to_utc(config.effective_at) if config.effective_at else batch.effective_at
                moment = moment or datetime.now(UTC)
                where = f"{source}:{name if is_url(name) else Path(name).name}"
                verdicts = judge_listings(
                    conn, batch.full_listings, moment, marked=marked, min_share=settings.catalog_min_listing_share
                )
                listings += [(where, verdict) for verdict in verdicts]
                full = {v.exchange: batch.full_listings[v.exchange] for v in verdicts if v.full}
                applied = apply_observations(conn, batch.records, moment, where, full_listings=full)
                counts["observations"] += applied["observations"]
            if not reads:
                catalog_store.rederive_symbols(conn)
                catalog_store.rederive_exchanges(conn)
            active_after = catalog_store.active_symbols(conn)
            versions = catalog_store.read_symbols(conn)
            exchange_versions = catalog_store.read_exchanges(conn)
            checks = symbol_check_results(versions)
            passed = all(check.passed for check in checks)
            if LISTING_CHECK_KEY in context.selected_asset_check_keys:
                checks.append(listing_check_result(listings))
            if not passed:
                conn.rollback()
            tables = {key: table_metadata(conn, f"{GROUP}.{key.path[-1]}") for key in (SYMBOLS, EXCHANGES)}
        if not passed:
            yield from checks
            return
        publish_lakehouse(warehouse.url, settings.lakehouse)
        current = versions.filter(pl.col("valid_until").is_null())
        judged = listing_metadata(listings)
        delisted = sorted(active_before - active_after)
        shown = versions.select("symbol", "valid_from", "valid_until", "exchange", "active", "tick_size")
        yield dg.MaterializeResult(
            asset_key=EXCHANGES,
            metadata={
                **tables[EXCHANGES],
                "preview": preview(exchange_versions.select("exchange", "valid_from", "timezone", "calendar")),
            },
        )
        yield dg.MaterializeResult(
            asset_key=SYMBOLS,
            metadata={
                **tables[SYMBOLS],
                **{f"run_{name}": value for name, value in counts.items()},
                "run_delisted": len(delisted),
                "run_partial_listings": judged["partial_listings"],
                "listing_warning": judged["sample"],
                "listings": judged["listings"],
                "run_listed": len(active_after - active_before),
                "delisted_sample": ", ".join(delisted[:20]),
                "symbols": current.height,
                "active": current.filter(pl.col("active")).height,
                "preview": preview(shown.sort("symbol", "valid_from")),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        for key, table in ((EXCHANGES_PARQUET, EXCHANGES), (SYMBOLS_PARQUET, SYMBOLS)):
            path = settings.lakehouse / key.path[-1]
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "dagster/uri": path.as_uri(),
                    "dagster/row_count": tables[table]["dagster/row_count"],
                    "bytes": path.stat().st_size,
                },
            )
        yield from checks

    return [catalog]
