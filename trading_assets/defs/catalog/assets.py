"""The symbol and exchange catalogs: point-in-time versions in PostgreSQL and the lakehouse parquet files."""

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from trading_assets.catalog import apply_observations, publish_lakehouse, to_utc
from trading_assets.compute.scd2 import version_problems
from trading_assets.config import Settings
from trading_assets.defs.resources import Warehouse
from trading_assets.io import catalog_store
from trading_assets.sources.symbol_connectors import ccxt_markets, tradingview_scan
from trading_assets.sources.symbol_files import SymbolBatch, read_records

GROUP = "catalog"
SYMBOLS = dg.AssetKey([GROUP, "symbols"])
EXCHANGES = dg.AssetKey([GROUP, "exchanges"])
SYMBOL_CHECKS = {
    "one_current_version": "at most one current version per symbol",
    "versions_contiguous": "each symbol's versions follow one another without gap or overlap",
    "bounds_in_utc": "validity bounds are UTC instants, in the table and in symbols.parquet",
}


class SymbolSourcesConfig(dg.Config):
    """What to load, by `source`: file = CSV/JSON symbol record files, binance = exchangeInfo snapshot files,
    ccxt = exchange ids (load_markets), tradingview = scanner markets. Nothing re-derives everything.
    `effective_at` (ISO time) overrides the snapshot's own time; without either, now."""

    inputs: list[str] = []
    source: str = "file"
    effective_at: str | None = None


def _check_results(versions: pl.DataFrame, parquet: Path) -> list[dg.AssetCheckResult]:
    problems = version_problems(versions)
    parquet_zone = pl.read_parquet_schema(parquet)["valid_from"].time_zone if parquet.exists() else "UTC"
    failing = {
        "one_current_version": problems["several_current"],
        "versions_contiguous": problems["not_contiguous"] + problems["empty_or_reversed"],
        "bounds_in_utc": int(parquet_zone != "UTC"),
    }
    return [
        dg.AssetCheckResult(check_name=name, passed=bad == 0, metadata={"violations": bad})
        for name, bad in failing.items()
    ]


def build_catalog_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    def _read_source(source: str, name: str, exchanges: dict[str, dict]) -> SymbolBatch:
        if source == "ccxt":
            return ccxt_markets(name, exchanges, settings.ccxt_api_url)
        if source == "tradingview":
            return tradingview_scan(name, exchanges, settings.tradingview_url)
        return read_records(Path(name), exchanges, source)

    @dg.asset(
        key=SYMBOLS,
        group_name=GROUP,
        kinds={"postgres", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(name, asset=SYMBOLS, blocking=True, description=text)
            for name, text in SYMBOL_CHECKS.items()
        ],
        description="Symbol versions [valid_from, valid_until) in UTC, derived from the append-only observation "
        "log (catalog.symbol_observations); also written atomically to the lakehouse as symbols.parquet.",
    )
    def symbols(config: SymbolSourcesConfig, warehouse: Warehouse) -> dg.MaterializeResult:
        started = time.perf_counter()
        counts = {"observations": 0, "inputs": len(config.inputs)}
        with warehouse.transaction() as conn:
            exchanges = catalog_store.known_exchanges(conn)
            for name in config.inputs:
                batch = _read_source(config.source, name, exchanges)
                moment = to_utc(config.effective_at) if config.effective_at else batch.effective_at
                applied = apply_observations(
                    conn,
                    batch.records,
                    moment or datetime.now(UTC),
                    f"{config.source}:{Path(name).name}",
                    full_listings=batch.full_listings,
                )
                counts["observations"] += applied["observations"]
            if not config.inputs:
                catalog_store.lock_catalog(conn)
                catalog_store.rederive_symbols(conn)
                catalog_store.rederive_exchanges(conn)
            versions = catalog_store.read_symbols(conn)
        publish_lakehouse(warehouse.url, settings.lakehouse)
        current = versions.filter(pl.col("valid_until").is_null())
        return dg.MaterializeResult(
            check_results=_check_results(versions, settings.lakehouse / "symbols.parquet"),
            metadata={
                **counts,
                "symbols": current.height,
                "active": current.filter(pl.col("active")).height,
                "versions": versions.height,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    @dg.asset(
        key=EXCHANGES,
        group_name=GROUP,
        kinds={"postgres", "parquet"},
        description="Exchange versions (country, timezone, crypto or not, trading calendar), derived like the "
        "symbols from catalog.exchange_observations; written to the lakehouse as exchanges.parquet.",
    )
    def exchanges(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            catalog_store.lock_catalog(conn)
            written = catalog_store.rederive_exchanges(conn)
        publish_lakehouse(warehouse.url, settings.lakehouse)
        return dg.MaterializeResult(metadata={"versions": written})

    return [symbols, exchanges]
