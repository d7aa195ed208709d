"""The Stage 1 client's spool, replayed into the Stage 1 tables: a sensor on the spool folder (each new file once,
by content) and a nightly schedule that retries what waits."""

from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from trading_assets.config import Settings
from trading_assets.defs.landing import files_version
from trading_assets.defs.resources import Warehouse
from trading_assets.defs.table_metadata import preview
from trading_assets.io import stage1_store

GROUP = "stage1"
SPOOL_REPLAY = dg.AssetKey([GROUP, "spool_replay"])
SPOOL_FILES = dg.AssetKey([GROUP, "spool_files"])
SPOOL_JOB = "stage1_spool_replay"
NOTHING_WAITING = "spool_nothing_waiting"
WAITING_NOT_GROWING = "spool_waiting_not_growing"
FOLDS_MATCH = "run_folds_match_summary"
RUNS_MEASURED = "runs_reference_measured_datasets"
LEGACY_MASTERED = "legacy_datasets_have_master_rows"


class SpoolConfig(dg.Config):
    files: list[str] = Field(
        default_factory=list,
        description="spool files to replay (each once, by content); empty: every *.sql of the spool folder",
    )


def spool_folder(settings: Settings) -> Path:
    return settings.landing / "stage1_spool"


def _check_specs() -> list[dg.AssetCheckSpec]:
    def spec(name: str, description: str) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(name, asset=SPOOL_REPLAY, description=description)

    return [
        spec(NOTHING_WAITING, "no spool statement waits (failed, kept with its error, retried by every replay)"),
        spec(WAITING_NOT_GROWING, "the waiting statements are no more than after the previous replay (ERROR)"),
        spec(FOLDS_MATCH, "every run's folds: as many as summary_metrics.folds, numbered 0..n-1 without a gap"),
        spec(RUNS_MEASURED, "every run references a dataset with both measurements (desktop datasets live elsewhere)"),
        spec(LEGACY_MASTERED, "every indicator_datasets row has its stage1_datasets row"),
    ]


def build_spool_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    folder = spool_folder(settings)

    @dg.observable_source_asset(
        key=SPOOL_FILES,
        group_name=GROUP,
        kinds={"file"},
        description=f"The desktop client's spool files waiting in {folder} (*.sql): their version is their contents.",
    )
    def spool_files() -> dg.DataVersion:
        return files_version(sorted(folder.glob("*.sql")))

    @dg.asset(
        key=SPOOL_REPLAY,
        group_name=GROUP,
        deps=[SPOOL_FILES],
        kinds={"postgres"},
        check_specs=_check_specs(),
        description="The Stage 1 tables as the desktop client's spool of INSERT statements fills them: each new "
        "spool file replayed once, statement by statement as role stage1_app; a refused statement (not an INSERT "
        "into a Stage 1 table, cut off) or one that failed (its parent row missing) is kept in "
        "stage1.spool_statements with why, and every replay retries the waiting ones.",
    )
    def spool_replay(context: dg.AssetExecutionContext, config: SpoolConfig, warehouse: Warehouse):
        paths = [Path(f) for f in config.files] or sorted(folder.glob("*.sql"))
        with warehouse.transaction() as conn:
            before = stage1_store.waiting_before(conn)
            counts = stage1_store.replay_spool(conn, [(p.name, p.read_bytes()) for p in paths])
            waiting = int(counts["waiting"].sum())
            reasons = conn.execute(
                "select coalesce(target_table, '(none)'), left(reason, 200), count(*) from stage1.spool_statements "
                "where outcome <> 'landed' group by 1, 2 order by 3 desc limit 20"
            ).fetchall()
            checks = [
                dg.AssetCheckResult(
                    check_name=NOTHING_WAITING,
                    passed=waiting == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"waiting": waiting, "by_table": preview(counts, "tables")},
                ),
                dg.AssetCheckResult(
                    check_name=WAITING_NOT_GROWING,
                    passed=before is None or waiting <= before,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"waiting": waiting, "after_previous_replay": before if before is not None else -1},
                ),
                *stage1_checks(conn),
            ]
        context.log.info(f"spool replay: {counts.to_dicts()}")
        return dg.MaterializeResult(
            metadata={
                "files": ", ".join(p.name for p in paths),
                **{f"run_{kind}": int(counts[kind].sum()) for kind in ("landed", "already_present", "refused")},
                "waiting": waiting,
                "by_table": preview(counts, "tables"),
                "not_landed_reasons": dg.MetadataValue.json([list(r) for r in reasons]),
            },
            check_results=checks,
        )

    return [spool_files, spool_replay]


def stage1_checks(conn: psycopg.Connection) -> list[dg.AssetCheckResult]:
    """The task list's validation SQL over the Stage 1 tables."""
    folds = conn.execute(
        """
        select r.run_id::text, (r.summary_metrics ->> 'folds')::int, count(f.fold_number),
               min(f.fold_number), max(f.fold_number)
        from stage1.walkforward_runs r left join stage1.walkforward_folds f using (run_id)
        group by r.run_id
        having count(f.fold_number) is distinct from (r.summary_metrics ->> 'folds')::int
            or (count(f.fold_number) > 0 and (min(f.fold_number) <> 0
                or max(f.fold_number) <> count(f.fold_number) - 1))
        """
    ).fetchall()
    unmeasured = conn.execute(
        "select r.run_id::text, d.dataset_slug from stage1.walkforward_runs r join stage1.stage1_datasets d "
        "using (dataset_id) where d.ohlcv_measurement is null or d.indicator_measurement is null"
    ).fetchall()
    unmastered = conn.execute(
        "select i.dataset_id::text from stage1.indicator_datasets i "
        "where not exists (select 1 from stage1.stage1_datasets d where d.dataset_id = i.dataset_id)"
    ).fetchall()
    return [
        dg.AssetCheckResult(
            check_name=FOLDS_MATCH,
            passed=not folds,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "runs": len(folds),
                "alert": "; ".join(
                    f"run {r}: {n} folds stored, summary says {want}" for r, want, n, _, _ in folds[:10]
                ),
            },
        ),
        dg.AssetCheckResult(
            check_name=RUNS_MEASURED,
            passed=not unmeasured,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"runs": len(unmeasured), "sample": dg.MetadataValue.json([list(r) for r in unmeasured[:20]])},
        ),
        dg.AssetCheckResult(
            check_name=LEGACY_MASTERED,
            passed=not unmastered,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"datasets": len(unmastered), "sample": ", ".join(r[0] for r in unmastered[:20])},
        ),
    ]


def build_spool_automation(settings: Settings) -> tuple[dg.SensorDefinition, dg.ScheduleDefinition]:
    folder = spool_folder(settings)

    @dg.sensor(
        name="stage1_spool_sensor",
        job_name=SPOOL_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Replays each new spool file of {folder} once (the run key is its content hash).",
    )
    def watch(context: dg.SensorEvaluationContext):
        last_seen = float(context.cursor or 0)
        new_files = sorted(p for p in folder.glob("*.sql") if p.stat().st_mtime > last_seen)
        if not new_files:
            return dg.SkipReason(f"no new spool files in {folder}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=stage1_store.file_sha256(path.read_bytes()),
                    run_config=dg.RunConfig(ops={"stage1__spool_replay": SpoolConfig(files=[str(path)])}),
                )
                for path in new_files
            ],
            cursor=str(max(p.stat().st_mtime for p in new_files)),
        )

    nightly = dg.ScheduleDefinition(
        name="stage1_spool_nightly",
        job_name=SPOOL_JOB,
        cron_schedule="30 2 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Nightly: every spool file not yet replayed, and a retry of every waiting statement.",
    )
    return watch, nightly
