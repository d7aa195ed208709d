"""The row counts the market assets report (ops.partition_rows, kept by their writers) against real counts."""

import dagster as dg
import polars as pl
from psycopg import sql

from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.checks import sample_table
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.resources import Warehouse
from trading_assets.io.postgres import read_frame

_COUNTED = [PRICE_HISTORIES, *BAR_KEYS.values(), *EMA_KEYS.values()]


def row_count_check(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    table = ".".join(key.path)

    @dg.asset_check(
        asset=key,
        name="row_counts_exact",
        description=f"the rows per month the runs report for {table} (ops.partition_rows) equal a count",
    )
    def row_counts_exact(warehouse: Warehouse) -> dg.AssetCheckResult:
        counted = sql.SQL("select date_trunc('month', trade_date)::date as month, count(*) as rows from {} group by 1")
        schema = {"month": pl.Date, "rows": pl.Int64}
        with warehouse.transaction() as conn:
            actual = read_frame(conn, counted.format(sql.Identifier(*key.path)), schema=schema)
            kept = read_frame(
                conn,
                sql.SQL("select month, rows from ops.partition_rows where table_name = {} and rows <> 0").format(
                    sql.Literal(table)
                ),
                schema=schema,
            )
        differing = (
            actual.join(kept, on="month", how="full", coalesce=True, suffix="_kept")
            .fill_null(0)
            .filter(pl.col("rows") != pl.col("rows_kept"))
            .sort("month")
        )
        return dg.AssetCheckResult(
            passed=differing.is_empty(),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"months_differing": differing.height, "sample": sample_table(differing)},
        )

    return row_counts_exact


ROW_COUNT_CHECKS = [row_count_check(key) for key in _COUNTED]
