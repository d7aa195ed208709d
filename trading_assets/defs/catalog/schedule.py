"""The daily catalog build and audit: the configured sources, then every check of the catalog."""

from datetime import UTC, datetime

import dagster as dg

from trading_assets.config import ConfigError, Settings
from trading_assets.defs.catalog.assets import CATALOG_KEYS, CATALOG_OP, LISTING_CHECK_KEY, SYMBOL_CHECK_KEYS
from trading_assets.defs.catalog.checks import CATALOG_CHECKS
from trading_assets.defs.jobs import LOAD_SYMBOLS_JOB

CATALOG_SCHEDULE = "catalog_daily"
# Every check of the catalog: the ones inside the catalog op (the blocking ones and the WARN `listing_complete`)
# and the table-wide WARN ones, which the job leaves to `validate_all_checks` when it loads files.
CATALOG_AUDIT = [
    *SYMBOL_CHECK_KEYS,
    LISTING_CHECK_KEY,
    *(key for check in CATALOG_CHECKS for key in check.check_keys),
]


def catalog_run_request(settings: Settings, run_key: str) -> dg.RunRequest:
    """A `load_symbols` run reading every configured source (none: it re-derives and audits what is stored)."""
    sources = [{"source": kind, "input": name} for kind, name in settings.catalog_sources]
    return dg.RunRequest(
        run_key=run_key,
        run_config={"ops": {CATALOG_OP: {"config": {"sources": sources}}}},
        asset_selection=CATALOG_KEYS,
        asset_check_keys=CATALOG_AUDIT,
    )


def build_catalog_schedule(settings: Settings) -> dg.ScheduleDefinition:
    def catalog_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        # A tick evaluated by hand (no scheduled time) still gets its own run key.
        moment = context.scheduled_execution_time or datetime.now(UTC)
        return catalog_run_request(settings, f"{CATALOG_SCHEDULE}:{moment.isoformat()}")

    try:
        return dg.ScheduleDefinition(
            name=CATALOG_SCHEDULE,
            cron_schedule=settings.catalog_cron,
            execution_timezone="UTC",
            job_name=LOAD_SYMBOLS_JOB,
            execution_fn=catalog_daily,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Refreshes the symbol catalog from TRADING_ASSETS_CATALOG_SOURCES (a full listing retires "
            "what its exchange no longer lists; one naming less than TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE of "
            "the exchange's active symbols retires nothing and fails the WARN check listing_complete) and audits "
            "it with every catalog check; with no source configured it re-derives and audits what is stored.",
        )
    except dg.DagsterInvalidDefinitionError as error:
        raise ConfigError(f"TRADING_ASSETS_CATALOG_CRON={settings.catalog_cron!r} is not a cron schedule") from error
