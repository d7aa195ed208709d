"""The `trading` group: tables of the data maintenance guide built from files and from the platform's series."""

import time
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
from psycopg import sql

from trading_assets.compute import macro
from trading_assets.config import Settings
from trading_assets.defs.metadata.assets import FACT_SERIES_VALUE, FOLLOW_PARENTS
from trading_assets.defs.partitions import run_window
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview, table_metadata
from trading_assets.io import trading_store
from trading_assets.io.postgres import read_frame

GROUP = "trading"
MACRO_SIGNALS = dg.AssetKey([GROUP, "macro_signals"])
# The group's observed source files (their version is their contents).
SOURCES: list[dg.AssetKey] = []
MACRO_KNOWN_WHEN_USED = "macro_values_known_when_used"
MACRO_SLOPES_MATCH = "macro_slopes_match_yields"
# Signals follow the series: a day's yields land by the next morning.
SIGNALS_FOLLOW = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=4), warn_window=timedelta(days=2))


def macro_checks(conn) -> list[dg.AssetCheckResult]:
    """No row uses a monthly value before its release day; the slopes are the differences of the yields."""
    early = conn.execute(
        """
        select count(*) filter (where cpi_month + interval '1 month' + make_interval(days => %s - 1) > trade_date),
               count(*) filter (where unrate_month + interval '1 month' + make_interval(days => %s - 1) > trade_date)
        from trading.macro_signals
        """,
        (macro.RELEASE_DAY["CPIAUCSL"], macro.RELEASE_DAY["UNRATE"]),
    ).fetchone()
    slopes = conn.execute(
        "select count(*) from trading.macro_signals where abs(slope_10y_2y - (dgs10 - dgs2)) > 1e-9 "
        "or abs(slope_10y_3m - (dgs10 - dgs3mo)) > 1e-9"
    ).fetchone()[0]
    return [
        dg.AssetCheckResult(
            check_name=MACRO_KNOWN_WHEN_USED,
            asset_key=MACRO_SIGNALS,
            passed=early == (0, 0),
            metadata={"cpi_rows_before_release": early[0], "unrate_rows_before_release": early[1]},
        ),
        dg.AssetCheckResult(
            check_name=MACRO_SLOPES_MATCH, asset_key=MACRO_SIGNALS, passed=slopes == 0, metadata={"rows": slopes}
        ),
    ]


def trading_table_asset(
    key: dg.AssetKey,
    *,
    deps: list[dg.AssetDep | dg.AssetKey],
    partitions: dg.MonthlyPartitionsDefinition,
    checks: list[dg.AssetCheckSpec],
    description: str,
    freshness: dg.FreshnessPolicy,
    automation: dg.AutomationCondition | None = None,
):
    """A monthly-partitioned table of the group whose run may end without a materialization: when a blocking
    check fails, its writes are rolled back and only the checks are reported."""
    return dg.multi_asset(
        name=key.path[-1],
        specs=[
            dg.AssetSpec(
                key,
                group_name=GROUP,
                deps=deps,
                kinds={"postgres", "polars"},
                description=description,
                freshness_policy=freshness,
                automation_condition=automation,
                skippable=True,
            )
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=checks,
    )


def finish(conn, checks: list[dg.AssetCheckResult], blocking: set[str], metadata: dict) -> Iterator:
    """The run's outcome: its checks alone (its writes rolled back) when a blocking one failed, else the
    materialization with them."""
    if any(not c.passed and c.check_name in blocking for c in checks):
        conn.rollback()
        yield from checks
        return
    yield dg.MaterializeResult(metadata=metadata, check_results=checks)


def build_trading_assets(settings: Settings, partitions: dg.MonthlyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    macro_deps = [
        dg.AssetDep(
            FACT_SERIES_VALUE, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-macro.MONTHS_BEFORE)
        )
    ]

    @trading_table_asset(
        MACRO_SIGNALS,
        deps=macro_deps,
        partitions=partitions,
        freshness=SIGNALS_FOLLOW,
        automation=FOLLOW_PARENTS,
        checks=[
            dg.AssetCheckSpec(
                MACRO_KNOWN_WHEN_USED,
                asset=MACRO_SIGNALS,
                blocking=True,
                description="no row uses a CPI or unemployment value before its release day (no look-ahead)",
            ),
            dg.AssetCheckSpec(
                MACRO_SLOPES_MATCH,
                asset=MACRO_SIGNALS,
                blocking=True,
                description="slopes equal the differences of the yields",
            ),
        ],
        description="Yield-curve slopes (10y-2y, 10y-3m), CPI year over year and the unemployment change per "
        "Treasury business day, from the FRED series of core_energy.fact_series_value; a monthly value counts "
        f"from its release (CPI from day {macro.RELEASE_DAY['CPIAUCSL']} of the next month, unemployment from day "
        f"{macro.RELEASE_DAY['UNRATE']}), never earlier.",
    )
    def macro_signals(context: dg.AssetExecutionContext, warehouse: Warehouse):
        started = time.perf_counter()
        window = run_window(context)
        codes = [*macro.DAILY_SERIES, *macro.MONTHLY_SERIES]
        since = window.start - timedelta(days=31 * macro.MONTHS_BEFORE) if window.start else None
        with warehouse.transaction() as conn:
            observations = read_frame(
                conn,
                sql.SQL(
                    "select series_code, obs_date, value from core_energy.fact_series_value "
                    "where series_code = any({codes}) and obs_date < {end}{since}"
                ).format(
                    codes=sql.Literal(codes),
                    end=sql.Literal(window.end),
                    since=sql.SQL(" and obs_date >= {}").format(sql.Literal(since)) if since else sql.SQL(""),
                ),
                schema=macro.OBSERVATION_SCHEMA,
            )
            signals = macro.macro_signals(observations, window.start, window.end)
            removed = trading_store.replace_window(conn, "macro_signals", signals, window.start, window.end)
            metadata = {
                **table_metadata(conn, "trading.macro_signals"),
                "run_rows_written": signals.height,
                "run_rows_removed": removed,
                "missing_series": ", ".join(c for c in codes if c not in set(observations["series_code"])) or "none",
                "preview": preview(signals.tail(5)),
                "seconds": round(time.perf_counter() - started, 3),
            }
            yield from finish(conn, macro_checks(conn), {MACRO_KNOWN_WHEN_USED, MACRO_SLOPES_MATCH}, metadata)

    return [macro_signals]
