"""Corporate actions and ticker history from Lean's factor and map files, and the adjusted daily bars."""

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from trading_assets.compute.adjustment import action_events, split_mismatches, unexplained_jumps
from trading_assets.config import Settings
from trading_assets.defs.landing import file_source, files_version
from trading_assets.defs.market.assets import BAR_KEYS
from trading_assets.defs.market.checks import sample_table
from trading_assets.defs.market.dimensions import DIM_ASSETS
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview, table_metadata
from trading_assets.io import reference_store
from trading_assets.io.postgres import read_frame
from trading_assets.sources.lean_reference import (
    FACTOR_SCHEMA,
    TICKER_SCHEMA,
    read_factor_file,
    read_folder,
    read_map_file,
)

FACTOR_FILES = dg.AssetKey(["market", "lean_factor_files"])
MAP_FILES = dg.AssetKey(["catalog", "lean_map_files"])
CORPORATE_ACTIONS = dg.AssetKey(["market", "corporate_actions"])
TICKER_HISTORY = dg.AssetKey(["catalog", "ticker_history"])
ADJUSTED_BARS = dg.AssetKey(["market", "price_bars_1d_adjusted"])
ADJUSTED_VIEW = "market.price_bars_1d_adjusted"


def reference_folder(settings: Settings) -> Path:
    """Where Lean's equity reference files land: factor_files/ and map_files/ below it."""
    return settings.landing / "reference" / "lean"


def build_reference_assets(settings: Settings) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    folder = reference_folder(settings)

    def file_table(
        key: dg.AssetKey,
        files: dg.AssetKey,
        read: Callable[[], pl.DataFrame],
        table: str,
        key_column: str,
        description: str,
    ) -> dg.AssetsDefinition:
        """The table that holds exactly the rows of a folder of reference files."""

        @dg.asset(key=key, group_name=key.path[0], deps=[files], kinds={"postgres"}, description=description)
        def loaded(warehouse: Warehouse) -> dg.MaterializeResult:
            rows = read()
            with warehouse.transaction() as conn:
                changed = reference_store.replace_reference(conn, table, rows)
                described = table_metadata(conn, table, rows.height)
            return dg.MaterializeResult(
                metadata={
                    **described,
                    "securities": rows["security"].n_unique(),
                    "securities_changed": len(changed),
                    "changed": ", ".join(changed[:50]),
                    "preview": preview(rows.drop("source_file").sort("security", key_column)),
                }
            )

        return loaded

    corporate_actions = file_table(
        CORPORATE_ACTIONS,
        FACTOR_FILES,
        lambda: read_folder(folder / "factor_files", read_factor_file, FACTOR_SCHEMA),
        reference_store.CORPORATE_ACTIONS,
        "factor_date",
        "Splits and dividends as Lean factor files state them: per security (its permanent ticker), the "
        "cumulative price (dividend) and split factors that apply up to each row's date. The folder is the truth: "
        "a load makes the table hold exactly its files; a file with a bad line is refused whole, naming the file, "
        "line and reason.",
    )
    ticker_history = file_table(
        TICKER_HISTORY,
        MAP_FILES,
        lambda: read_folder(folder / "map_files", read_map_file, TICKER_SCHEMA),
        reference_store.TICKER_HISTORY,
        "valid_from",
        "Which ticker (and exchange) each security traded under on each date, from Lean map files: a ticker "
        "change joins the histories under one security (market.security_bars_1d).",
    )

    @dg.asset(
        key=ADJUSTED_BARS,
        group_name="market",
        deps=[BAR_KEYS["1d"], DIM_ASSETS, CORPORATE_ACTIONS, TICKER_HISTORY],
        kinds={"postgres"},
        description="Split-adjusted and total-return-adjusted daily bars per security, a view over the raw daily "
        "bars (never rewritten), the ticker history and the factors: computed when read, so a new split "
        "changes exactly the dates it covers. Multi-day bars and EMAs on adjusted prices come from the Python "
        "API (trading_assets.market.adjusted_bars / adjusted_emas), computed on demand.",
    )
    def price_bars_1d_adjusted(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            counts = conn.execute(
                "select count(*) filter (where adjustment = 'split'), count(distinct security) "
                "from market.price_bars_1d_adjusted"
            ).fetchone()
            described = table_metadata(conn, ADJUSTED_VIEW, 2 * counts[0])
        return dg.MaterializeResult(
            metadata={**described, "daily_rows_per_adjustment": counts[0], "securities": counts[1]}
        )

    return [
        file_source(FACTOR_FILES, folder / "factor_files", "*.csv", "Lean factor files (splits and dividends)"),
        file_source(MAP_FILES, folder / "map_files", "*.csv", "Lean map files (ticker changes)"),
        corporate_actions,
        ticker_history,
        price_bars_1d_adjusted,
    ]


def build_reference_sensor(settings: Settings, job_name: str) -> dg.SensorDefinition:
    """Run `job_name` (the reference load) when a factor or map file lands or changes: a late file takes effect."""
    folder = reference_folder(settings)

    @dg.sensor(
        name="reference_files",
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Loads the Lean factor and map files in {folder} when one lands or changes.",
    )
    def watch(context: dg.SensorEvaluationContext):
        files = sorted(folder.glob("*_files/*.csv"))
        version = files_version(files).value if files else ""
        if not files or version == context.cursor:
            return dg.SkipReason(f"no new or changed files in {folder}")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"reference:{version}")], cursor=version)

    return watch


def _factors(warehouse: Warehouse) -> pl.DataFrame:
    with warehouse.transaction() as conn:
        return reference_store.read_reference(conn, reference_store.CORPORATE_ACTIONS)


def _bars(warehouse: Warehouse, view: str) -> pl.DataFrame:
    """security, trade_date, close of the raw security bars (security_bars_1d) or the split-adjusted ones."""
    query = {
        "raw": "select security, trade_date, close from market.security_bars_1d",
        "split": "select security, trade_date, close from market.price_bars_1d_adjusted where adjustment = 'split'",
    }[view]
    with warehouse.transaction() as conn:
        return read_frame(conn, query, schema={"security": pl.String, "trade_date": pl.Date, "close": pl.Float64})


@dg.asset_check(asset=CORPORATE_ACTIONS, description="every price and split factor is positive and finite")
def factors_positive(warehouse: Warehouse) -> dg.AssetCheckResult:
    factors = _factors(warehouse)
    bad = factors.filter(
        ~(pl.col("price_factor").is_finite() & (pl.col("price_factor") > 0))
        | ~(pl.col("split_factor").is_finite() & (pl.col("split_factor") > 0))
    )
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        metadata={"rows": bad.height, "sample": sample_table(bad.drop("source_file"))},
    )


@dg.asset_check(
    asset=CORPORATE_ACTIONS,
    description="each security's factor rows are in the order of their file: dates ordered as the lines were",
)
def factor_dates_ordered(warehouse: Warehouse) -> dg.AssetCheckResult:
    factors = _factors(warehouse).sort("security", "factor_date")
    bad = factors.filter(pl.col("source_line") <= pl.col("source_line").shift(1).over("security"))
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        metadata={"rows": bad.height, "sample": sample_table(bad.drop("source_file"))},
    )


@dg.asset_check(
    asset=ADJUSTED_BARS,
    description="each split of the factor files matches the raw price jump on its ex-date: raw close over the "
    "previous close times the split ratio is within 25% of 1",
)
def splits_match_price_jumps(warehouse: Warehouse) -> dg.AssetCheckResult:
    events = action_events(_factors(warehouse))
    bad = split_mismatches(events, _bars(warehouse, "raw"))
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "splits": int((events["split_ratio"] != 1).sum()),
            "mismatched": bad.height,
            "sample": sample_table(bad),
        },
    )


@dg.asset_check(
    asset=ADJUSTED_BARS,
    description="split-adjusted closes that move more than 30% in a day: candidate missing corporate actions "
    "(or real crashes), listed for a person to look at",
)
def unexplained_price_jumps(warehouse: Warehouse) -> dg.AssetCheckResult:
    jumps = unexplained_jumps(_bars(warehouse, "split"))
    return dg.AssetCheckResult(
        passed=jumps.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"jumps": jumps.height, "candidates": sample_table(jumps)},
    )


@dg.asset_check(
    asset=TICKER_HISTORY,
    description="each security has one ticker a day (its intervals neither reversed nor overlapping) and no "
    "ticker belongs to two securities on the same day (its bars would count for both)",
)
def tickers_one_per_day(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.transaction() as conn:
        history = reference_store.read_reference(conn, reference_store.TICKER_HISTORY)
    reversed_rows = history.filter(pl.col("valid_until") < pl.col("valid_from"))
    overlapping = []
    for key in ("security", "ticker"):
        ordered = history.sort(key, "valid_from").with_columns(previous_until=pl.col("valid_until").shift(1).over(key))
        overlapping.append(ordered.filter(pl.col("valid_from") <= pl.col("previous_until")).drop("previous_until"))
    bad = pl.concat([reversed_rows, *overlapping]).unique().sort("security", "valid_from")
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        metadata={"rows": bad.height, "sample": sample_table(bad.drop("source_file"))},
    )


REFERENCE_CHECKS = [
    factors_positive,
    factor_dates_ordered,
    splits_match_price_jumps,
    unexplained_price_jumps,
    tickers_one_per_day,
]
