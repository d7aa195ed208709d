"""Alert sensors: a failed run, and failed asset checks, become alerts with a severity (ops.alerts)."""

import dagster as dg

from trading_assets.config import Settings
from trading_assets.io.alerts import Alert, send_alert
from trading_assets.io.database import ready_database_url

# Check evaluations read per tick; the cursor moves on, so a backlog drains over a few ticks.
_EVALUATIONS_PER_TICK = 500


def check_severity(evaluation: dg.AssetCheckEvaluation) -> str:
    """A failed blocking ERROR check stopped something downstream: CRITICAL; other ERROR checks: ERROR;
    WARN checks: WARNING."""
    if evaluation.severity == dg.AssetCheckSeverity.WARN:
        return "WARNING"
    return "CRITICAL" if evaluation.blocking else "ERROR"


def check_failure_alerts(evaluations: list[dg.AssetCheckEvaluation], source: str) -> list[Alert]:
    """One alert per severity, listing the failed checks."""
    by_severity: dict[str, list[str]] = {}
    for evaluation in evaluations:
        if not evaluation.passed:
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            by_severity.setdefault(check_severity(evaluation), []).append(name)
    return [
        Alert(severity, f"{len(names)} asset check(s) failed", "\n".join(sorted(names)), source)
        for severity, names in by_severity.items()
    ]


def build_alert_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    def url() -> str:
        return ready_database_url(settings.database_url, settings.embedded_pgdata)

    @dg.run_failure_sensor(
        name="alert_on_run_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an ERROR alert for every failed run (Telegram / webhook; recorded in ops.alerts).",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        body = f"run {run.run_id}\n{context.failure_event.message or ''}".strip()
        send_alert(settings, url(), Alert("ERROR", f"Run failed: {run.job_name}", body, "alert_on_run_failure"))

    @dg.sensor(
        name="alert_on_check_failure",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends alerts for failed asset checks: CRITICAL for blocking ERROR checks, ERROR for other "
        "ERROR checks, WARNING for WARN checks (sent when at or above TRADING_ASSETS_ALERT_MIN_SEVERITY).",
    )
    def alert_on_check_failure(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        after = int(context.cursor) if context.cursor else None
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
            limit=_EVALUATIONS_PER_TICK,
            ascending=True,
        )
        if not records:
            return dg.SkipReason("no new check evaluations")
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
        alerts = check_failure_alerts(evaluations, "alert_on_check_failure")
        for alert in alerts:
            send_alert(settings, url(), alert)
        context.update_cursor(str(records[-1].storage_id))
        return dg.SkipReason(f"{len(records)} evaluations read, {len(alerts)} alert(s) raised")

    return [alert_on_run_failure, alert_on_check_failure]
