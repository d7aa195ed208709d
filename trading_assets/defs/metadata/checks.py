"""Asset checks of the series slice: the integrity queries of the replaced metadata guide."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from trading_assets.compute.series import model_col_problem, stale_series
from trading_assets.defs.metadata.assets import DIM_SERIES, FACT_SERIES_VALUE, MAP_MODEL_SERIES, V_SERIES_WIDE
from trading_assets.defs.resources import Warehouse
from trading_assets.io import series_store

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


def _listing(values: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.text(", ".join(values[:50]) + (" ..." if len(values) > 50 else ""))


@dg.asset_check(asset=MAP_MODEL_SERIES, blocking=True, description="map_model_series equals dim_series row for row")
def dim_map_mismatch(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        only_in_dim, only_in_map = series_store.dim_map_differences(conn)
    mismatches = len(only_in_dim) + len(only_in_map)
    return dg.AssetCheckResult(
        passed=mismatches == 0,
        severity=ERROR,
        metadata={
            "mismatches": mismatches,
            "only_in_dim_series": _listing(only_in_dim),
            "only_in_map": _listing(only_in_map),
        },
    )


@dg.asset_check(
    asset=DIM_SERIES,
    blocking=True,
    description="model_col is lower snake_case, at most 63 bytes, not a column of the wide view itself (date) "
    "and unique (case-insensitively)",
)
def model_col_valid(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        columns = series_store.model_cols(conn)
    invalid = [c for c in columns if model_col_problem(c)]
    lowered = pl.Series(columns, dtype=pl.String).str.to_lowercase()
    duplicated = sorted(set(lowered.filter(lowered.is_duplicated()).to_list()))
    return dg.AssetCheckResult(
        passed=not invalid and not duplicated,
        severity=ERROR,
        metadata={
            "invalid": _listing(invalid),
            "duplicated": _listing(duplicated),
            "model_cols": len(columns),
        },
    )


@dg.asset_check(asset=V_SERIES_WIDE, blocking=True, description="view columns equal dim_series model_cols")
def view_columns_match(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        expected = set(series_store.model_cols(conn))
        actual = set(series_store.wide_view_columns(conn))
    return dg.AssetCheckResult(
        passed=expected == actual,
        severity=ERROR,
        metadata={
            "missing_in_view": _listing(sorted(expected - actual)),
            "not_in_dim_series": _listing(sorted(actual - expected)),
            "columns": len(actual),
        },
    )


@dg.asset_check(asset=FACT_SERIES_VALUE, description="every dim_series series has observations")
def every_series_observed(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        latest = series_store.latest_observations(conn)
    empty = latest.filter(pl.col("observations") == 0)["series_code"].to_list()
    return dg.AssetCheckResult(
        passed=not empty,
        severity=WARN,
        metadata={"without_observations": _listing(empty), "series": latest.height},
    )


@dg.asset_check(asset=FACT_SERIES_VALUE, description="each series' newest observation is recent for its freq")
def series_fresh(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        latest = series_store.latest_observations(conn)
    stale = stale_series(latest, datetime.now(UTC).date())
    return dg.AssetCheckResult(
        passed=stale.is_empty(),
        severity=WARN,
        metadata={
            "stale": _listing([f"{r['series_code']} ({r['last_obs_date']})" for r in stale.to_dicts()]),
            "series": latest.height,
        },
    )


SERIES_CHECKS = [dim_map_mismatch, model_col_valid, view_columns_match, every_series_observed, series_fresh]
