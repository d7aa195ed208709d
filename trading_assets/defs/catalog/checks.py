"""WARN checks of the symbol catalog (the blocking ones run inside the `symbols` asset)."""

import dagster as dg
import polars as pl

from trading_assets.compute.scd2 import STRUCTURAL_FIELDS
from trading_assets.defs.catalog.assets import SYMBOLS
from trading_assets.defs.resources import Warehouse
from trading_assets.io import catalog_store

WARN = dg.AssetCheckSeverity.WARN


def _current(warehouse: Warehouse) -> tuple[pl.DataFrame, pl.DataFrame]:
    with warehouse.transaction() as conn:
        symbols = catalog_store.read_symbols(conn).filter(pl.col("valid_until").is_null())
        exchanges = catalog_store.read_exchanges(conn).filter(pl.col("valid_until").is_null())
    return symbols, exchanges


def _result(bad: pl.DataFrame, total: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        severity=WARN,
        metadata={"symbols": bad.height, "of": total, "sample": ", ".join(bad["symbol"].head(20).to_list())},
    )


@dg.asset_check(asset=SYMBOLS, description="crypto symbols (profile CRYPTO) whose timezone is not UTC")
def crypto_in_utc(warehouse: Warehouse) -> dg.AssetCheckResult:
    symbols, _ = _current(warehouse)
    return _result(
        symbols.filter((pl.col("profile") == "CRYPTO") & pl.col("timezone").ne_missing("UTC")), symbols.height
    )


@dg.asset_check(asset=SYMBOLS, description="current symbols without a timezone")
def timezone_present(warehouse: Warehouse) -> dg.AssetCheckResult:
    symbols, _ = _current(warehouse)
    return _result(symbols.filter(pl.col("timezone").is_null() | (pl.col("timezone") == "Unknown")), symbols.height)


@dg.asset_check(asset=SYMBOLS, description="symbols whose timezone differs from their exchange's")
def timezone_matches_exchange(warehouse: Warehouse) -> dg.AssetCheckResult:
    symbols, exchanges = _current(warehouse)
    joined = symbols.join(exchanges.select("exchange", exchange_timezone="timezone"), on="exchange", how="left")
    return _result(joined.filter(pl.col("timezone").ne_missing(pl.col("exchange_timezone"))), symbols.height)


@dg.asset_check(asset=SYMBOLS, description="share of current symbols missing a structural field (tick size, ...)")
def structural_fields_present(warehouse: Warehouse) -> dg.AssetCheckResult:
    symbols, _ = _current(warehouse)
    missing = {f: symbols[f].null_count() for f in STRUCTURAL_FIELDS}
    share = {f: round(n / symbols.height, 4) if symbols.height else 0.0 for f, n in missing.items()}
    # Contract size exists for derivatives only, minimum quantity and notional for some venues only: shown,
    # not judged.
    judged = ("tick_size", "pricescale", "minmov", "lot_size")
    worst = max(share[f] for f in judged)
    lacking = symbols.select(
        "symbol", lacks=pl.concat_list(pl.when(pl.col(f).is_null()).then(pl.lit(f)) for f in judged).list.drop_nulls()
    ).filter(pl.col("lacks").list.len() > 0)
    sample = ", ".join(f"{symbol} ({', '.join(lacks)})" for symbol, lacks in lacking.head(20).iter_rows())
    return dg.AssetCheckResult(
        passed=worst <= 0.05,
        severity=WARN,
        metadata={**{f"missing_{f}": v for f, v in share.items()}, "sample": sample},
    )


CATALOG_CHECKS = [crypto_in_utc, timezone_present, timezone_matches_exchange, structural_fields_present]
