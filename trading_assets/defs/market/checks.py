"""WARN checks of the bars: what a person should look at (the blocking invariants live in the assets)."""

import dagster as dg
import polars as pl
from psycopg import sql

from trading_assets.compute.bars import missing_sessions, outlier_days
from trading_assets.compute.calendars import Timeframe, session_table
from trading_assets.defs.market.assets import BAR_KEYS
from trading_assets.defs.resources import Warehouse
from trading_assets.io import market_store
from trading_assets.io.postgres import read_frame

WARN = dg.AssetCheckSeverity.WARN
_SHOWN = 20


def sample_table(frame: pl.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(_SHOWN).to_pandas().to_markdown(index=False) if frame.height else "none")


def _daily(warehouse: Warehouse) -> pl.DataFrame:
    with warehouse.transaction() as conn:
        return read_frame(
            conn,
            "select b.asset_id, a.symbol, a.calendar, b.trade_date, b.open, b.high, b.low, b.close "
            "from market.price_bars_1d b join market.dim_assets a using (asset_id) order by b.asset_id, b.trade_date",
        )


@dg.asset_check(asset=BAR_KEYS["1d"], description="expected sessions of each asset's calendar without a daily bar")
def gaps_against_calendar(warehouse: Warehouse) -> dg.AssetCheckResult:
    daily = _daily(warehouse)
    if daily.is_empty():
        return dg.AssetCheckResult(passed=True, severity=WARN, metadata={"missing_sessions": 0})
    daily = daily.cast({"trade_date": pl.Date})
    sessions = session_table(daily["calendar"].unique().to_list(), daily["trade_date"].min(), daily["trade_date"].max())
    missing = missing_sessions(daily, sessions).join(daily.select("asset_id", "symbol").unique(), on="asset_id")
    per_asset = missing.group_by("symbol").len().sort("len", descending=True)
    return dg.AssetCheckResult(
        passed=missing.is_empty(),
        severity=WARN,
        metadata={"missing_sessions": missing.height, "by_symbol": sample_table(per_asset)},
    )


@dg.asset_check(asset=BAR_KEYS["1d"], description="bad prints: wick far outside the body, or a reverting jump")
def price_outliers(warehouse: Warehouse) -> dg.AssetCheckResult:
    daily = _daily(warehouse)
    outliers = outlier_days(daily) if daily.height else daily
    return dg.AssetCheckResult(
        passed=outliers.is_empty(),
        severity=WARN,
        metadata={"outliers": outliers.height, "rows": sample_table(outliers)},
    )


def _shortest_bar_days(timeframe: Timeframe) -> int:
    """Days of history a timeframe needs before its first bar can complete."""
    return timeframe.n * {"D": 1, "W": 7, "M": 28, "Y": 365}[timeframe.unit]


def family_checks(family: str) -> list[dg.AssetChecksDefinition]:
    key = BAR_KEYS[family]
    table = market_store.BAR_TABLES[family]

    @dg.asset_check(
        asset=key, name="coverage", description="every asset x active timeframe with enough history has bars"
    )
    def coverage(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.transaction() as conn:
            timeframes = [Timeframe.parse(t) for t in market_store.active_timeframes(conn, family)]
            spans = read_frame(
                conn,
                "select asset_id, min(trade_date) as first, max(trade_date) as last "
                "from market.price_bars_1d group by asset_id",
            )
            present = read_frame(
                conn, sql.SQL("select distinct asset_id, tf from market.{}").format(sql.Identifier(table))
            )
        if spans.is_empty():
            return dg.AssetCheckResult(passed=True, severity=WARN, metadata={"missing": 0})
        days = spans.select("asset_id", span=(pl.col("last") - pl.col("first")).dt.total_days() + 1)
        expected = days.join(
            pl.DataFrame({"tf": [t.label for t in timeframes], "needed": [_shortest_bar_days(t) for t in timeframes]}),
            how="cross",
        ).filter((pl.col("span") >= pl.col("needed")) | pl.col("tf").str.ends_with("D"))
        missing = expected.join(present, on=["asset_id", "tf"], how="anti") if present.height else expected
        return dg.AssetCheckResult(
            passed=missing.is_empty(),
            severity=WARN,
            metadata={"missing": missing.height, "expected": expected.height, "sample": sample_table(missing)},
        )

    @dg.asset_check(
        asset=key,
        name="canonical_spacing",
        description="consecutive canonical rows of an asset and timeframe close consecutive bars",
    )
    def canonical_spacing(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.transaction() as conn:
            skipped = read_frame(
                conn,
                sql.SQL(
                    """
                    select asset_id, tf, trade_date, bar_seq, previous_seq from (
                        select asset_id, tf, trade_date, bar_seq,
                               lag(bar_seq) over (partition by asset_id, tf order by trade_date) as previous_seq
                        from market.{} where not is_partial_end
                    ) canonical where bar_seq - previous_seq > 1
                    """
                ).format(sql.Identifier(table)),
            )
        return dg.AssetCheckResult(
            passed=skipped.is_empty(),
            severity=WARN,
            metadata={"bars_without_canonical_row": skipped.height, "sample": sample_table(skipped)},
        )

    return [coverage, canonical_spacing]


MARKET_CHECKS = [
    gaps_against_calendar,
    price_outliers,
    *(check for family in market_store.MULTI_FAMILIES for check in family_checks(family)),
]
