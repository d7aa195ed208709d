"""The named jobs the CLI, the schedules, the sensors and the UI share."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from trading_assets.defs.catalog.assets import CATALOG_KEYS
from trading_assets.defs.catalog.checks import CATALOG_CHECKS
from trading_assets.defs.market.assets import BAR_KEYS, PRICE_HISTORIES
from trading_assets.defs.market.checks import MARKET_CHECKS
from trading_assets.defs.market.corporate_actions import (
    ADJUSTED_BARS,
    CORPORATE_ACTIONS,
    REFERENCE_CHECKS,
    TICKER_HISTORY,
)
from trading_assets.defs.market.dimensions import DIM_ASSETS, DIM_EMA_PERIOD, DIM_TIMEFRAME
from trading_assets.defs.market.ema_checks import EMA_TABLE_CHECKS, FRESHNESS_GATE
from trading_assets.defs.market.emas import EMA_KEYS
from trading_assets.defs.market.row_count_checks import ROW_COUNT_CHECKS
from trading_assets.defs.metadata.assets import (
    DIM_SERIES,
    DIM_SERIES_BACKUP,
    FACT_SERIES_VALUE,
    MAP_MODEL_SERIES,
    V_SERIES_WIDE,
    WIDE_VIEW_FOLLOWERS,
)
from trading_assets.defs.metadata.checks import SERIES_CHECKS, model_col_valid
from trading_assets.defs.metadata.series_import import series_import_job
from trading_assets.defs.ops.maintenance import BACKUP
from trading_assets.defs.stage1.spool import GROUP as STAGE1_GROUP
from trading_assets.defs.stage1.spool import SPOOL_FILES, SPOOL_JOB, SPOOL_REPLAY
from trading_assets.defs.trading.assets import GROUP as TRADING_GROUP
from trading_assets.defs.trading.assets import MULTI_RESOLUTION_BARS
from trading_assets.defs.trading.assets import SOURCES as TRADING_SOURCES
from trading_assets.defs.trading.intraday import INTRADAY_JOB

VALIDATE_JOB = "validate_all_checks"
LOAD_PRICES_JOB = "load_prices"
LOAD_SERIES_JOB = "load_series"
LOAD_SYMBOLS_JOB = "load_symbols"
SERIES_SYNC_JOB = "core_energy_sync"
REFRESH_BARS_JOB = "refresh_bars"
REFRESH_EMAS_JOB = "refresh_emas"
REFRESH_MARKET_JOB = "refresh_market"
MARKET_DAILY_JOB = "market_daily"
OBSERVE_JOB = "observe_market_dimensions"
OBSERVE_SERIES_JOB = "observe_core_energy"
SERIES_IMPORT_JOB = series_import_job.name
STAGE1_DATASETS_JOB = "stage1_datasets"
TRADING_JOB = "trading_tables"
BACKUP_JOB = "ops_backup"
REFERENCE_JOB = "load_corporate_actions"
# Runs writing the market tables carry this tag; the run queue lets one of them run at a time.
MARKET_WRITER = {"trading_assets/writes": "market"}

BARS = dg.AssetSelection.assets(*BAR_KEYS.values())
EMAS = dg.AssetSelection.assets(*EMA_KEYS.values())
# Checks that read whole tables run in the validate job (and its schedule), not in every refresh.
TABLE_CHECKS = dg.AssetSelection.checks(
    *SERIES_CHECKS,
    *MARKET_CHECKS,
    *EMA_TABLE_CHECKS,
    *ROW_COUNT_CHECKS,
    *CATALOG_CHECKS,
    *REFERENCE_CHECKS,
    FRESHNESS_GATE,
)
SERIES_SYNC = dg.AssetSelection.assets(DIM_SERIES, MAP_MODEL_SERIES, V_SERIES_WIDE, DIM_SERIES_BACKUP)


def build_jobs() -> list[UnresolvedAssetJobDefinition | dg.JobDefinition]:
    def market_job(name: str, selection: dg.AssetSelection, description: str) -> UnresolvedAssetJobDefinition:
        return dg.define_asset_job(
            name, selection=selection - TABLE_CHECKS, tags=MARKET_WRITER, description=description
        )

    return [
        dg.define_asset_job(VALIDATE_JOB, selection=TABLE_CHECKS, description="Every table-wide asset check."),
        market_job(LOAD_PRICES_JOB, dg.AssetSelection.assets(PRICE_HISTORIES), "Load price files."),
        dg.define_asset_job(
            LOAD_SERIES_JOB, selection=dg.AssetSelection.assets(FACT_SERIES_VALUE) - TABLE_CHECKS,
            description="Load series observation files.",
        ),
        dg.define_asset_job(
            LOAD_SYMBOLS_JOB, selection=dg.AssetSelection.assets(*CATALOG_KEYS) - TABLE_CHECKS,
            description="Load symbol records into the catalog and publish its parquet files.",
        ),
        dg.define_asset_job(
            SERIES_SYNC_JOB, selection=SERIES_SYNC - TABLE_CHECKS,
            description="dim_series observed (a new database seeded from its file), then the derived map, the "
            "wide view and a dated backup.",
        ),
        market_job(REFRESH_BARS_JOB, BARS, "Daily bars and every multi-day bar family."),
        market_job(REFRESH_EMAS_JOB, EMAS, "Every EMA family."),
        market_job(REFRESH_MARKET_JOB, BARS | EMAS, "Bars, then the EMAs on them (ordered by the graph)."),
        market_job(
            MARKET_DAILY_JOB, dg.AssetSelection.assets(PRICE_HISTORIES) | BARS | EMAS,
            "Waiting price files, then bars and EMAs: new and changed days only.",
        ),
        dg.define_asset_job(
            OBSERVE_JOB, selection=dg.AssetSelection.assets(DIM_ASSETS, DIM_TIMEFRAME, DIM_EMA_PERIOD),
            description="Observe the market dimension tables (their data versions).",
        ),
        dg.define_asset_job(
            OBSERVE_SERIES_JOB,
            selection=dg.AssetSelection.assets(DIM_SERIES, WIDE_VIEW_FOLLOWERS) - TABLE_CHECKS
            | dg.AssetSelection.checks(model_col_valid),
            description="Observe the core_energy tables edited with SQL (dim_series, wide_view_followers).",
        ),
        series_import_job,
        dg.define_asset_job(
            STAGE1_DATASETS_JOB,
            selection=dg.AssetSelection.groups(STAGE1_GROUP) - dg.AssetSelection.assets(SPOOL_REPLAY, SPOOL_FILES),
            description="The research datasets built from our bars and EMAs (config/stage1_datasets.toml).",
        ),
        dg.define_asset_job(
            TRADING_JOB, selection=dg.AssetSelection.groups(TRADING_GROUP) - dg.AssetSelection.assets(*TRADING_SOURCES),
            description="The trading tables (options, intraday, VIX, macro, trades) over the partitions asked.",
        ),
        dg.define_asset_job(
            REFERENCE_JOB,
            selection=dg.AssetSelection.assets(CORPORATE_ACTIONS, TICKER_HISTORY, ADJUSTED_BARS) - TABLE_CHECKS,
            description="Load the Lean factor and map files (corporate actions, ticker history) and refresh the "
            "adjusted daily bars over them.",
        ),
        dg.define_asset_job(
            BACKUP_JOB, selection=dg.AssetSelection.assets(BACKUP),
            description="Back up the platform and Dagster instance databases (pg_dump) and rotate the backups.",
        ),
        dg.define_asset_job(
            INTRADAY_JOB, selection=dg.AssetSelection.assets(MULTI_RESOLUTION_BARS),
            description="Read the minute files from their checkpoints and roll the sessions they touch.",
        ),
        dg.define_asset_job(
            SPOOL_JOB, selection=dg.AssetSelection.assets(SPOOL_REPLAY),
            description="Replay the Stage 1 client's spool files (each once) and retry what waits.",
        ),
    ]  # fmt: skip
