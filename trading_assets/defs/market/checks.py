"""Table-wide checks of the bars: what a person should look at (the blocking invariants live in the assets)."""

import dagster as dg
import polars as pl
from psycopg import sql

from trading_assets.compute.bars import outlier_days
from trading_assets.compute.calendars import Timeframe
from trading_assets.defs.market.assets import BAR_KEYS
from trading_assets.defs.resources import Warehouse
from trading_assets.io import market_store
from trading_assets.io.postgres import read_frame

WARN = dg.AssetCheckSeverity.WARN
# Missing data is an ERROR in the runbook (it alerts at the default threshold); it never blocks a run.
MISSING_DATA = dg.AssetCheckSeverity.ERROR
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


@dg.asset_check(
    asset=BAR_KEYS["1d"],
    description="no daily bar follows a missing session of its asset's calendar (the bars' is_missing_days / "
    "count_missing_days flags, which the multi-day families' gap counts agree with)",
)
def gaps_against_calendar(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        gaps = read_frame(
            conn,
            "select a.symbol, a.calendar, b.trade_date, b.count_missing_days from market.price_bars_1d b "
            "join market.dim_assets a using (asset_id) where b.is_missing_days order by a.symbol, b.trade_date",
            schema={"symbol": pl.String, "calendar": pl.String, "trade_date": pl.Date, "count_missing_days": pl.Int64},
        )
    per_asset = (
        gaps.group_by("symbol")
        .agg(rows_after_gaps=pl.len(), missing_sessions=pl.col("count_missing_days").sum())
        .sort("missing_sessions", descending=True)
    )
    listing = ", ".join(f"{r['symbol']} ({r['missing_sessions']})" for r in per_asset.head(_SHOWN).to_dicts())
    return dg.AssetCheckResult(
        passed=gaps.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "missing_sessions": int(gaps["count_missing_days"].sum()),
            "rows_after_gaps": gaps.height,
            "by_symbol": sample_table(per_asset),
            "rows": sample_table(gaps),
            **({"alert": f"Missing sessions by symbol: {listing}"} if gaps.height else {}),
        },
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
            return dg.AssetCheckResult(passed=True, severity=MISSING_DATA, metadata={"missing": 0})
        days = spans.select("asset_id", span=(pl.col("last") - pl.col("first")).dt.total_days() + 1)
        expected = days.join(
            pl.DataFrame({"tf": [t.label for t in timeframes], "needed": [_shortest_bar_days(t) for t in timeframes]}),
            how="cross",
        ).filter((pl.col("span") >= pl.col("needed")) | pl.col("tf").str.ends_with("D"))
        missing = expected.join(present, on=["asset_id", "tf"], how="anti") if present.height else expected
        return dg.AssetCheckResult(
            passed=missing.is_empty(),
            severity=MISSING_DATA,
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
