"""The symbol and exchange catalogs: point-in-time versions in PostgreSQL and the lakehouse parquet files."""

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from trading_assets.catalog import apply_observations, publish_lakehouse, to_utc
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


class SymbolSource(dg.Config):
    """One input of its own kind (as `source` below)."""

    source: str
    input: str


class SymbolSourcesConfig(dg.Config):
    """What to load, by `source`: file = CSV/JSON symbol record files, binance = exchangeInfo snapshot files or
    endpoint URLs, ccxt = exchange ids (load_markets), tradingview = scanner markets; `sources` adds inputs of
    other kinds (the daily schedule lists the configured ones there). Nothing re-derives everything.
    `effective_at` (ISO time) overrides the snapshot's own time; without either, now."""

    inputs: list[str] = []
    source: str = "file"
    sources: list[SymbolSource] = []
    effective_at: str | None = None


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
            dg.AssetCheckSpec(name, asset=SYMBOLS, blocking=True, description=text)
            for name, text in SYMBOL_CHECKS.items()
        ],
    )
    def catalog(config: SymbolSourcesConfig, warehouse: Warehouse):
        """Load symbol records and derive the versions; publish the parquet files only when the blocking checks
        pass (otherwise the write is rolled back and nothing is published)."""
        started = time.perf_counter()
        reads = [(config.source, name) for name in config.inputs] + [(s.source, s.input) for s in config.sources]
        counts = {"observations": 0, "inputs": len(reads)}
        with warehouse.transaction() as conn:
            exchanges = catalog_store.known_exchanges(conn)
            # Taken before reading what is active, so the run's delistings are its own.
            catalog_store.lock_catalog(conn)
            active_before = catalog_store.active_symbols(conn)
            for source, name in reads:
                batch = _read_source(source, name, exchanges)
                moment = to_utc(config.effective_at) if config.effective_at else batch.effective_at
                applied = apply_observations(
                    conn,
                    batch.records,
                    moment or datetime.now(UTC),
                    f"{source}:{name if is_url(name) else Path(name).name}",
                    full_listings=batch.full_listings,
                )
                counts["observations"] += applied["observations"]
            if not reads:
                catalog_store.rederive_symbols(conn)
                catalog_store.rederive_exchanges(conn)
            active_after = catalog_store.active_symbols(conn)
            versions = catalog_store.read_symbols(conn)
            exchange_versions = catalog_store.read_exchanges(conn)
            checks = symbol_check_results(versions)
            passed = all(check.passed for check in checks)
            if not passed:
                conn.rollback()
            tables = {key: table_metadata(conn, f"{GROUP}.{key.path[-1]}") for key in (SYMBOLS, EXCHANGES)}
        if not passed:
            yield from checks
            return
        publish_lakehouse(warehouse.url, settings.lakehouse)
        current = versions.filter(pl.col("valid_until").is_null())
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
