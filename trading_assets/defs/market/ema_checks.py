"""Checks of the EMAs: which queued assets wait on stale daily bars, and table-wide WARN checks."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
from psycopg import sql

from trading_assets.config import Settings
from trading_assets.defs.market.assets import BAR_KEYS
from trading_assets.defs.market.checks import MISSING_DATA, sample_table
from trading_assets.defs.market.emas import EMA_KEYS, ema_timeframes, stale_assets, stale_bars_text
from trading_assets.defs.resources import Warehouse
from trading_assets.io import ema_store, market_store
from trading_assets.io.postgres import read_frame

WARN = dg.AssetCheckSeverity.WARN
FRESHNESS_GATE = dg.AssetCheckKey(BAR_KEYS["1d"], "fresh_for_emas")


def build_freshness_gate(settings: Settings) -> dg.AssetChecksDefinition:
    hours = settings.market_staleness_hours

    @dg.asset_check(
        asset=BAR_KEYS["1d"],
        name="fresh_for_emas",
        description=f"every asset queued for EMAs has a daily bar no more than {hours} hours older than its "
        "calendar's last expected session (wall-clock hours for 24/7 assets); the EMA runs leave the others "
        "queued and build the rest (TRADING_ASSETS_MARKET_STALENESS_HOURS)",
    )
    def fresh_for_emas(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.transaction() as conn:
            queued = ema_store.queued_assets(conn)
            stale = stale_assets(conn, queued, hours, datetime.now(UTC))
            symbols = market_store.symbols_of(conn, stale)
        return dg.AssetCheckResult(
            passed=not stale,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "queued_assets": len(queued),
                "stale_asset_ids": dg.MetadataValue.json(stale),
                "stale_symbols": dg.MetadataValue.json(symbols),
                **({"alert": stale_bars_text(stale, symbols)} if stale else {}),
            },
        )

    return fresh_for_emas


def family_checks(family: str) -> list[dg.AssetChecksDefinition]:
    key = EMA_KEYS[family]
    view = sql.Identifier(family)

    @dg.asset_check(
        asset=key,
        name="coverage",
        description="every asset x timeframe x active period with enough canonical closes for its seed has EMAs",
    )
    def coverage(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.transaction() as conn:
            timeframes = ema_timeframes(conn, family)
            periods = ema_store.active_periods(conn)
            # How many closes each (asset, tf) has taken in: canonical closes (daily ones for v2).
            seen = read_frame(
                conn,
                sql.SQL("select asset_id, tf, max(n_closes) as n_closes from market.{} group by asset_id, tf").format(
                    sql.Identifier(f"{family}_packed")
                ),
                schema={"asset_id": pl.Int64, "tf": pl.String, "n_closes": pl.Int64},
            )
            present = read_frame(
                conn,
                sql.SQL("select distinct asset_id, tf, period from market.{}").format(view),
                schema={"asset_id": pl.Int64, "tf": pl.String, "period": pl.Int64},
            )
        needed = pl.DataFrame({"period": periods}, schema={"period": pl.Int64})
        if family == "ema_multi_tf_v2":
            days = pl.DataFrame({"tf": [t.label for t in timeframes], "tf_days": [t.nominal_days for t in timeframes]})
            expected = (
                seen.join(days, on="tf")
                .join(needed, how="cross")
                .filter(pl.col("n_closes") >= pl.col("period") * pl.col("tf_days"))
            )
        else:
            expected = seen.join(needed, how="cross").filter(pl.col("n_closes") >= pl.col("period"))
        missing = expected.select("asset_id", "tf", "period").join(present, on=["asset_id", "tf", "period"], how="anti")
        return dg.AssetCheckResult(
            passed=missing.is_empty(),
            severity=MISSING_DATA,
            metadata={"missing": missing.height, "expected": expected.height, "sample": sample_table(missing)},
        )

    @dg.asset_check(
        asset=key,
        name="canonical_spacing",
        description="consecutive canonical rows of an asset, timeframe and period are no further apart than "
        "the timeframe allows (its nominal days, x2 for gaps and holidays)",
    )
    def canonical_spacing(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.transaction() as conn:
            wide = read_frame(
                conn,
                sql.SQL(
                    """
                    select asset_id, tf, trade_date, tf_days, gap from (
                        select asset_id, tf, trade_date, tf_days,
                               trade_date - lag(trade_date) over (partition by asset_id, tf order by trade_date) as gap
                        from market.{} where not roll
                    ) canonical where gap > 2 * tf_days + 3
                    """
                ).format(sql.Identifier(f"{family}_packed")),
            )
        return dg.AssetCheckResult(
            passed=wide.is_empty(),
            severity=WARN,
            metadata={"wide_gaps": wide.height, "sample": sample_table(wide)},
        )

    @dg.asset_check(
        asset=key,
        name="no_rows_before_seed",
        description="every asset x timeframe x period starts on a canonical row (its seed): nothing before it",
    )
    def no_rows_before_seed(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.transaction() as conn:
            early = read_frame(
                conn,
                sql.SQL(
                    "select asset_id, tf, period, min(trade_date) as first_row, "
                    "min(trade_date) filter (where not roll) as seed from market.{} "
                    "group by asset_id, tf, period having min(trade_date) is distinct from "
                    "min(trade_date) filter (where not roll)"
                ).format(view),
            )
        return dg.AssetCheckResult(
            passed=early.is_empty(), severity=WARN, metadata={"series": early.height, "sample": sample_table(early)}
        )

    return [coverage, canonical_spacing, no_rows_before_seed]


EMA_TABLE_CHECKS = [check for family in ema_store.EMA_FAMILIES for check in family_checks(family)]
