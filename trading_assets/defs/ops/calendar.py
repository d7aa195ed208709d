"""The maintenance guide's calendar as schedules: Dagster's own history purged, the weekly digest of what failed,
and the quarterly capacity-planning report."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import psycopg
from dagster._core.storage.dagster_run import RunsFilter

from trading_assets.compute import capacity
from trading_assets.config import Settings
from trading_assets.defs.ops.maintenance import GROUP, utc_schedule
from trading_assets.defs.resources import Warehouse
from trading_assets.io.alerts import Alert, send_alert
from trading_assets.io.postgres import read_frame

PURGE_RUNS_JOB = "purge_run_history"
WEEKLY_DIGEST_JOB = "weekly_digest"
CAPACITY_REPORT = dg.AssetKey([GROUP, "capacity_report"])
WEEKLY_CHECKLIST = (
    "Weekly (Sunday): verify the backups completed (ops.backup_log), review the week's errors (failed runs, failed "
    "checks, alerts: this digest), VACUUM (ANALYZE) of the changed tables (ops/vacuum_analyze)."
)
MONTHLY_CHECKLIST = (
    "Monthly (first days): REINDEX of bloated indexes (ops/reindex), a restore of the newest backup compared table "
    "by table (ops/restore_test), retention's archives verified (ops/retention)."
)
QUARTERLY_CHECKLIST = (
    "Quarterly: capacity planning: growth per table per month and the projected sizes in 3, 6 and 12 months "
    "(ops/capacity_report), against the storage thresholds of ops/table_sizes."
)


def purge_runs(instance: dg.DagsterInstance, before: datetime) -> int:
    """Delete the runs created before `before` with their event logs; returns how many."""
    runs = instance.get_run_records(filters=RunsFilter(created_before=before))
    for record in runs:
        instance.delete_run(record.dagster_run.run_id)
    return len(runs)


def week_digest(instance: dg.DagsterInstance, conn: psycopg.Connection, since: datetime) -> Alert:
    """One alert listing the week's failed runs, failed checks and alerts, and the last backup."""
    failed = instance.get_run_records(
        filters=RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], created_after=since), limit=50
    )
    checks = conn.execute(
        "select title, count(*) from ops.alerts where created_at >= %s and source like '%%check%%' group by 1 "
        "order by 2 desc limit 20",
        (since,),
    ).fetchall()
    alerts = conn.execute(
        "select severity, count(*) from ops.alerts where created_at >= %s group by 1 order by 1", (since,)
    ).fetchall()
    backup = conn.execute(
        "select max(finished_at), bool_and(restore_passed) filter (where restore_checked_at is not null) "
        "from ops.backup_log where kind = 'platform'"
    ).fetchone()
    lines = [
        f"Failed runs: {len(failed)}",
        *(
            f"- {r.dagster_run.job_name} {r.dagster_run.run_id[:8]} ({r.create_timestamp:%Y-%m-%d %H:%M})"
            for r in failed
        ),
        f"Failed checks alerted: {sum(n for _, n in checks)}",
        *(f"- {title} x{n}" for title, n in checks),
        "Alerts: " + (", ".join(f"{s} {n}" for s, n in alerts) or "none"),
        f"Last backup: {backup[0] or 'never'}; restore tests passed: "
        + ("none run" if backup[1] is None else str(backup[1])),
    ]
    severity = "WARNING" if failed or checks or backup[0] is None else "INFO"
    return Alert(severity, f"Weekly digest since {since:%Y-%m-%d}", "\n".join(lines), "weekly_digest")


def growth_report(history: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Per table: its size now, its growth per month (least squares) and its projected size in 3, 6, 12 months."""
    rows = []
    for (table,), sizes in history.partition_by("table_name", as_dict=True).items():
        ordered = sizes.sort("measured_at").select("measured_at", bytes="total_bytes")
        size = int(ordered["bytes"][-1])
        per_day = capacity.growth_per_day(ordered)
        rows.append(
            {
                "table_name": table,
                "bytes": size,
                "growth_per_month": int((per_day or 0) * 30.44),
                **{f"in_{m}_months": capacity.projected(size, per_day, m) for m in (3, 6, 12)},
            }
        )
    return pl.DataFrame(rows).sort("bytes", descending=True) if rows else pl.DataFrame()


def build_calendar(settings: Settings) -> tuple[list, list[dg.ScheduleDefinition], list[dg.JobDefinition]]:
    @dg.op(description=f"delete the runs (and their event logs) older than {settings.run_history_days} days")
    def purge_old_runs(context: dg.OpExecutionContext) -> None:
        before = datetime.now(UTC) - timedelta(days=settings.run_history_days)
        context.log.info(f"purged {purge_runs(context.instance, before)} run(s) created before {before:%Y-%m-%d}")

    @dg.job(name=PURGE_RUNS_JOB, description="Purge Dagster's run and event-log history past its retention.")
    def purge_run_history() -> None:
        purge_old_runs()

    @dg.op(description=WEEKLY_CHECKLIST)
    def send_week_digest(context: dg.OpExecutionContext, warehouse: Warehouse) -> None:
        since = datetime.now(UTC) - timedelta(days=7)
        with warehouse.transaction() as conn:
            digest = week_digest(context.instance, conn, since)
        statuses = send_alert(settings, warehouse.url, digest)
        context.log.info(f"weekly digest ({digest.severity}): {statuses}\n{digest.body}")

    @dg.job(name=WEEKLY_DIGEST_JOB, description=WEEKLY_CHECKLIST)
    def weekly_digest() -> None:
        send_week_digest()

    @dg.asset(
        key=CAPACITY_REPORT,
        group_name=GROUP,
        deps=[dg.AssetKey([GROUP, "table_sizes"])],
        kinds={"postgres"},
        description=QUARTERLY_CHECKLIST,
    )
    def capacity_report(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            history = read_frame(
                conn,
                "select measured_at, table_name, total_bytes from ops.table_size_history "
                "where database_name = current_database()",
                schema={"measured_at": pl.Datetime("us", "UTC"), "table_name": pl.String, "total_bytes": pl.Int64},
            )
        report = growth_report(history, datetime.now(UTC))
        shown = report.head(25).with_columns(pl.exclude("table_name") / 1024**2).rename(
            {c: f"{c}_mib" for c in report.columns if c != "table_name"}
        ) if not report.is_empty() else report  # fmt: skip
        return dg.MaterializeResult(
            metadata={
                "tables": report.height,
                "report": dg.MetadataValue.md(
                    shown.to_pandas().round(1).to_markdown(index=False) if shown.height else "no history"
                ),
            }
        )

    schedules = [
        utc_schedule(
            "purge_run_history_daily",
            "30 0 * * *",
            f"Purge Dagster runs and event logs older than {settings.run_history_days} days.",
            job=purge_run_history,
        ),
        utc_schedule("weekly_digest_sunday", "0 8 * * 0", WEEKLY_CHECKLIST, job=weekly_digest),
        utc_schedule(
            "monthly_checklist",
            "0 2 1 * *",
            MONTHLY_CHECKLIST,
            target=dg.AssetSelection.assets(dg.AssetKey([GROUP, "reindex"]), dg.AssetKey([GROUP, "restore_test"])),
        ),
        utc_schedule(
            "capacity_quarterly",
            "0 7 1 1,4,7,10 *",
            QUARTERLY_CHECKLIST,
            target=dg.AssetSelection.assets(CAPACITY_REPORT),
        ),
    ]
    return [capacity_report], schedules, [purge_run_history, weekly_digest]
