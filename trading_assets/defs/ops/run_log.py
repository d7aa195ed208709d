"""Every run of the code location (CLI, schedule, sensor, UI) writes its events to the day log as it goes,
with `ERROR` and `FAILED` on the lines the runbook's grep looks for; a schedule removes old day logs."""

import logging
from datetime import UTC, datetime

import dagster as dg

from trading_assets.config import Settings
from trading_assets.defs.ops.alerts import user_error
from trading_assets.io.run_logs import LOG_RETENTION_DAYS, append_line, remove_old_logs

CLEAN_LOGS_JOB = "clean_logs"
_E = dg.DagsterEventType


def _metadata_text(metadata: dict, names: tuple[str, ...]) -> str:
    return " ".join(f"{name}={metadata[name].value}" for name in names if name in metadata)


def describe(event: dg.DagsterEvent) -> tuple[str, str] | None:
    """(level, text) of a run event worth a line in the day log; None for the others."""
    data = event.event_specific_data
    step = event.step_key or ""
    if event.event_type == _E.RUN_START:
        return "INFO", "run started"
    if event.event_type == _E.RUN_SUCCESS:
        return "INFO", "run succeeded"
    if event.event_type == _E.RUN_FAILURE:
        return "ERROR", "run FAILED"
    if event.event_type == _E.STEP_START:
        return "INFO", f"{step} started"
    if event.event_type == _E.STEP_SUCCESS:
        return "INFO", f"{step} done in {data.duration_ms / 1000:.1f}s"
    if event.event_type == _E.STEP_FAILURE:
        return "ERROR", f"{step} FAILED: {user_error(data.error) if data.error else ''}"
    if event.event_type == _E.ASSET_MATERIALIZATION:
        materialization = data.materialization
        partition = f" [{materialization.partition}]" if materialization.partition else ""
        counts = _metadata_text(
            materialization.metadata, ("run_rows_written", "rows_written", "assets_rebuilt", "repairs", "gaps_flagged")
        )
        return "INFO", f"{materialization.asset_key.to_user_string()}{partition} materialized {counts}".rstrip()
    if event.event_type == _E.ASSET_CHECK_EVALUATION:
        name = f"check {data.asset_key.to_user_string()}:{data.check_name}"
        if data.passed:
            return "INFO", f"{name} passed"
        detail = data.metadata.get("alert")
        text = f"{name} FAILED" + (f": {detail.value}" if detail is not None else "")
        return ("WARN" if data.severity == dg.AssetCheckSeverity.WARN else "ERROR"), text
    return None


class DayLogHandler(logging.Handler):
    """The instance's handler (dagster.yaml `python_logs`): every run on the instance, whoever launched it,
    writes its events to the day log of TRADING_ASSETS_HOME."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.logs_dir = Settings.from_env().logs_dir

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if meta is None:
            return
        event = meta.get("dagster_event")
        if event is not None:
            described = describe(event)
        elif record.levelno >= logging.INFO:  # the assets' own messages (progress, what they skipped)
            described = logging.getLevelName(record.levelno), meta.get("orig_message", record.getMessage())
        else:
            described = None
        if described is None:
            return
        level, text = described
        run_id = (meta.get("run_id") or "")[:8]
        try:
            append_line(self.logs_dir, level, f"run={run_id} job={meta.get('job_name')} {text}")
        except OSError:
            self.handleError(record)  # a full disk must not fail the run


def build_clean_logs(settings: Settings) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.op(description=f"delete the day logs older than {LOG_RETENTION_DAYS} days")
    def remove_old_day_logs(context: dg.OpExecutionContext) -> None:
        removed = remove_old_logs(settings.logs_dir, datetime.now(UTC).date())
        context.log.info(f"removed {len(removed)} day log(s): {', '.join(p.name for p in removed) or 'none'}")

    @dg.job(name=CLEAN_LOGS_JOB, description="Remove day logs past their retention (`make clean-logs`).")
    def clean_logs() -> None:
        remove_old_day_logs()

    schedule = dg.ScheduleDefinition(
        name="clean_logs_daily",
        job=clean_logs,
        cron_schedule="15 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return clean_logs, schedule
