"""Alert sensors: a failed run, and failed asset checks, become alerts with a severity (ops.alerts).

A failed run raises one alert: CRITICAL when a blocking ERROR check failed in it (that is what failed it),
ERROR otherwise. Checks that do not fail their run raise one alert per run and severity: ERROR for ERROR
checks, WARNING for WARN checks. The CLI raises the same alerts, with the same keys, for runs it executed
while no daemon was running, so no event is ever alerted twice.
"""

import dagster as dg

from trading_assets.config import Settings
from trading_assets.io.alerts import Alert, send_alert
from trading_assets.io.database import ready_database_url

# Check evaluations read per tick; the cursor moves on, so a backlog drains over a few ticks.
_EVALUATIONS_PER_TICK = 500


def fails_its_run(evaluation: dg.AssetCheckEvaluation) -> bool:
    return not evaluation.passed and evaluation.blocking and evaluation.severity == dg.AssetCheckSeverity.ERROR


def run_failure_alert(run: dg.DagsterRun, evaluations: list[dg.AssetCheckEvaluation], message: str) -> Alert:
    """The one alert of a failed run (`evaluations`: its check evaluations)."""
    blocking = sorted(f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if fails_its_run(e))
    severity = "CRITICAL" if blocking else "ERROR"
    lines = [f"run {run.run_id}", *(f"blocking check failed: {name}" for name in blocking), message]
    body = "\n".join(lines).strip()
    return Alert(severity, f"Run failed: {run.job_name}", body, "alert_on_run_failure", dedupe_key=f"run:{run.run_id}")


def check_failure_alerts(evaluations: list[tuple[str, dg.AssetCheckEvaluation]], source: str) -> list[Alert]:
    """Per run and severity, one alert listing the failed checks that did not fail their run
    (`evaluations`: (run id, evaluation))."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for run_id, evaluation in evaluations:
        if evaluation.passed or fails_its_run(evaluation):
            continue
        severity = "WARNING" if evaluation.severity == dg.AssetCheckSeverity.WARN else "ERROR"
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        grouped.setdefault((run_id, severity), []).append(name)
    return [
        Alert(
            severity,
            f"{len(names)} asset check(s) failed",
            "\n".join([f"run {run_id}", *sorted(names)]),
            source,
            dedupe_key=f"checks:{run_id}:{severity}",
        )
        for (run_id, severity), names in grouped.items()
    ]


def run_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    return [
        entry.dagster_event.event_specific_data
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]


def alerts_of_run(instance: dg.DagsterInstance, run_id: str) -> list[Alert]:
    """Every alert a run calls for, as the sensors would raise them."""
    run = instance.get_run_by_id(run_id)
    evaluations = run_evaluations(instance, run_id)
    alerts = check_failure_alerts([(run_id, e) for e in evaluations], "cli")
    if run.status == dg.DagsterRunStatus.FAILURE:
        alerts.append(run_failure_alert(run, evaluations, ""))
    return alerts


def build_alert_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    def url() -> str:
        return ready_database_url(settings.database_url, settings.embedded_pgdata)

    @dg.run_failure_sensor(
        name="alert_on_run_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One alert per failed run (CRITICAL when a blocking check failed it, else ERROR; Telegram / "
        "webhook; recorded in ops.alerts).",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        evaluations = run_evaluations(context.instance, run.run_id)
        send_alert(settings, url(), run_failure_alert(run, evaluations, context.failure_event.message or ""))

    @dg.sensor(
        name="alert_on_check_failure",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts for failed asset checks that do not fail their run: ERROR for ERROR checks, WARNING "
        "for WARN checks (sent when at or above TRADING_ASSETS_ALERT_MIN_SEVERITY).",
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
        evaluations = [(r.event_log_entry.run_id, r.event_log_entry.dagster_event.event_specific_data) for r in records]
        alerts = check_failure_alerts(evaluations, "alert_on_check_failure")
        for alert in alerts:
            send_alert(settings, url(), alert)
        context.update_cursor(str(records[-1].storage_id))
        return dg.SkipReason(f"{len(records)} evaluations read, {len(alerts)} alert(s) raised")

    return [alert_on_run_failure, alert_on_check_failure]
