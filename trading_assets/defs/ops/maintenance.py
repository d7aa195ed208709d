"""Operations as assets: retention (archive, then drop partitions), each with its schedule, its record in
ops.maintenance_log and checks that say whether it did its job."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg

from trading_assets.config import Settings
from trading_assets.defs.resources import Warehouse
from trading_assets.io import retention

GROUP = "ops"
RETENTION = dg.AssetKey([GROUP, "retention"])
RETENTION_RESPECTED = "retention_respected"
ARCHIVES_VERIFIED = "archives_verified"
PERMANENT_TABLES_INTACT = "permanent_tables_intact"


def table_key(table: str) -> dg.AssetKey:
    """The asset of a table: its schema is its group."""
    return dg.AssetKey(table.split(".", 1))


def retention_checks(
    conn: psycopg.Connection, policies: list[retention.Policy], archive_dir: Path, today: datetime
) -> list[dg.AssetCheckResult]:
    """Nothing older than its retention is left (partitions re-attached on purpose aside); every dropped partition
    has its archive, whose checksum matches; a permanent table has at least the rows it had at the last run."""
    overdue = []
    for policy in policies:
        if policy.days is None:
            continue
        held = {n for (n,) in conn.execute(
            "select partition_name from ops.retention_archives where table_name = %s and reattached_at is not null",
            (policy.table,),
        )}  # fmt: skip
        horizon = today.date() - timedelta(days=policy.days)
        overdue += [
            f"{policy.table}.{p.name}"
            for p in retention.expired(retention.partitions_of(conn, policy.table), horizon)
            if p.name not in held
        ]
    unverified = []
    for table, partition, file, sha in conn.execute(
        "select table_name, partition_name, file, sha256 from ops.retention_archives"
    ):
        path = archive_dir / file
        if not path.exists() or retention.file_sha256(path) != sha:
            unverified.append(f"{table}.{partition}: {'missing' if not path.exists() else 'checksum differs'}")
    shrunk = []
    for policy in (p for p in policies if p.days is None):
        now_rows = conn.execute(
            psycopg.sql.SQL("select count(*) from {}").format(psycopg.sql.Identifier(*policy.table.split(".", 1)))
        ).fetchone()[0]
        before = conn.execute(
            "select max((detail ->> 'rows')::bigint) from ops.maintenance_log where task = 'permanent_rows' "
            "and target = %s",
            (policy.table,),
        ).fetchone()[0]
        if before is not None and now_rows < before:
            shrunk.append(f"{policy.table}: {now_rows} rows, {before} before")
        conn.execute(
            "insert into ops.maintenance_log (task, target, started_at, finished_at, rows, outcome, detail) "
            "values ('permanent_rows', %s, now(), now(), %s, 'done', %s)",
            (policy.table, now_rows, json.dumps({"rows": now_rows})),
        )
    return [
        dg.AssetCheckResult(
            check_name=RETENTION_RESPECTED,
            asset_key=RETENTION,
            passed=not overdue,
            metadata={"overdue_partitions": dg.MetadataValue.json(overdue[:50])},
        ),
        dg.AssetCheckResult(
            check_name=ARCHIVES_VERIFIED,
            asset_key=RETENTION,
            passed=not unverified,
            metadata={"unverified": dg.MetadataValue.json(unverified[:50])},
        ),
        dg.AssetCheckResult(
            check_name=PERMANENT_TABLES_INTACT,
            asset_key=RETENTION,
            passed=not shrunk,
            metadata={"shrunk": dg.MetadataValue.json(shrunk)},
        ),
    ]


def build_retention(settings: Settings) -> tuple[dg.AssetsDefinition, dg.ScheduleDefinition]:
    policies = retention.read_policies(settings.retention_config)
    described = ", ".join(f"{p.table} {p.days or 'permanent'}{' days' if p.days else ''}" for p in policies)

    @dg.asset(
        key=RETENTION,
        group_name=GROUP,
        deps=[table_key(p.table) for p in policies],
        kinds={"postgres", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                RETENTION_RESPECTED,
                asset=RETENTION,
                description="no partition older than its "
                "table's retention is left in the database (re-attached ones aside)",
            ),
            dg.AssetCheckSpec(
                ARCHIVES_VERIFIED,
                asset=RETENTION,
                description="every dropped partition has its "
                "archive, and the archive's checksum matches the one recorded",
            ),
            dg.AssetCheckSpec(
                PERMANENT_TABLES_INTACT,
                asset=RETENTION,
                description="a permanent table has at least the rows it had at the previous run",
            ),
        ],
        description=f"Retention ({settings.retention_config.name}: {described}): each expired day or month "
        f"partition is archived to zstd parquet under {settings.archive_dir} (manifest with rows and checksums; "
        "read back and compared) and only then detached and dropped. No DELETE, no VACUUM after. "
        "`trading-assets archive attach TABLE PARTITION` puts one back.",
    )
    def retention_asset(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        now = datetime.now(UTC)
        with warehouse.transaction() as conn:
            made = []
            for policy in policies:
                made += retention.apply_policy(conn, policy, settings.archive_dir, now.date())
            checks = retention_checks(conn, policies, settings.archive_dir, now)
        context.log.info(f"retention archived and dropped {len(made)} partition(s)")
        return dg.MaterializeResult(
            metadata={
                "partitions_dropped": len(made),
                "rows_archived": sum(e["rows"] for e in made),
                "archives": dg.MetadataValue.json(made[:50]),
                "archive_dir": str(settings.archive_dir),
            },
            check_results=checks,
        )

    schedule = dg.ScheduleDefinition(
        name="retention_daily",
        target=dg.AssetSelection.assets(RETENTION),
        cron_schedule="30 1 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Archive and drop the partitions past their retention (after the day's loads, before backup).",
    )
    return retention_asset, schedule
