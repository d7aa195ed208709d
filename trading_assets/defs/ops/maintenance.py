"""Operations as assets: retention (archive, then drop partitions) and table sizes, each with its schedule, its
record in ops and checks that say whether it did its job."""

import base64
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
from psycopg.conninfo import conninfo_to_dict

from trading_assets.compute import capacity
from trading_assets.config import ConfigError, Settings
from trading_assets.defs.resources import Warehouse
from trading_assets.io import dumps, retention
from trading_assets.io.maintenance_log import log_maintenance
from trading_assets.io.postgres import copy_frame, read_frame

GROUP = "ops"
RETENTION = dg.AssetKey([GROUP, "retention"])
RETENTION_RESPECTED = "retention_respected"
ARCHIVES_VERIFIED = "archives_verified"
PERMANENT_TABLES_INTACT = "permanent_tables_intact"


def utc_schedule(
    name: str,
    cron: str,
    description: str,
    *,
    target: dg.AssetSelection | None = None,
    job: dg.JobDefinition | None = None,
) -> dg.ScheduleDefinition:
    """A schedule of the maintenance calendar: UTC, running from the start."""
    return dg.ScheduleDefinition(
        name=name,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
        **({"job": job} if job is not None else {"target": target}),
    )


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
            "select max(rows) from ops.maintenance_log where task = 'permanent_rows' and target = %s",
            (policy.table,),
        ).fetchone()[0]
        if before is not None and now_rows < before:
            shrunk.append(f"{policy.table}: {now_rows} rows, {before} before")
        log_maintenance(conn, "permanent_rows", policy.table, datetime.now(UTC), rows=now_rows)
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
        # The table's page in the UI says which of its dates left the database, and where they are now.
        for entry in made:
            context.log_event(
                dg.AssetObservation(
                    asset_key=table_key(entry["table"]),
                    metadata={
                        "retention_archived": f"[{entry['range_start']}, {entry['range_end']})",
                        "rows_archived": entry["rows"],
                        "archive": dg.MetadataValue.path(str(settings.archive_dir / entry["file"])),
                    },
                )
            )
        return dg.MaterializeResult(
            metadata={
                "partitions_dropped": len(made),
                "rows_archived": sum(e["rows"] for e in made),
                "archives": dg.MetadataValue.json(made[:50]),
                "archive_dir": str(settings.archive_dir),
            },
            check_results=checks,
        )

    schedule = utc_schedule(
        "retention_daily",
        "30 1 * * *",
        "Archive and drop the partitions past their retention (after the day's loads, before backup).",
        target=dg.AssetSelection.assets(RETENTION),
    )
    return retention_asset, schedule


TABLE_SIZES = dg.AssetKey([GROUP, "table_sizes"])
SIZE_THRESHOLDS = "database_size_thresholds"
_TOP_TABLES = 8
SIZE_SCHEMA = {"database_name": pl.String, "table_name": pl.String, "total_bytes": pl.Int64, "data_bytes": pl.Int64}


def measure_sizes(conn: psycopg.Connection, dagster_database: str | None) -> pl.DataFrame:
    """Total and data bytes of every table of the platform's database (a partitioned table with its partitions),
    and the size of each database: rows of ops.table_size_history, measured now."""
    tables = read_frame(
        conn,
        """
        select current_database() as database_name, n.nspname || '.' || c.relname as table_name,
               sum(pg_total_relation_size(t.relid))::bigint as total_bytes,
               sum(pg_relation_size(t.relid))::bigint as data_bytes
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        cross join lateral pg_partition_tree(c.oid) t
        where c.relkind in ('r', 'p') and not c.relispartition
          and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_%'
        group by 1, 2
        """,
        schema=SIZE_SCHEMA,
    )
    databases = [d for d in (conn.info.dbname, dagster_database) if d]
    totals = read_frame(
        conn,
        "select d as database_name, '(database)' as table_name, pg_database_size(d) as total_bytes, "
        "pg_database_size(d) as data_bytes from unnest(%s::text[]) d where exists "
        "(select from pg_database where datname = d)",
        (databases,),
    ).cast(SIZE_SCHEMA)
    return pl.concat([tables, totals]).with_columns(measured_at=pl.lit(datetime.now(UTC)).dt.cast_time_unit("us"))


def size_plot(history: pl.DataFrame, path: Path) -> Path:
    """A PNG of the largest tables' total size over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = history.filter(pl.col("table_name") != "(database)")
    latest = tables.filter(pl.col("measured_at") == pl.col("measured_at").max())
    top = latest.sort("total_bytes", descending=True).head(_TOP_TABLES)["table_name"].to_list()
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=90)
    for name in top:
        series = tables.filter(pl.col("table_name") == name).sort("measured_at")
        axes.plot(series["measured_at"].to_list(), (series["total_bytes"] / 1024**2).to_list(), marker=".", label=name)
    axes.set_ylabel("MiB (with indexes and TOAST)")
    axes.set_title(f"largest {len(top)} tables")
    axes.legend(fontsize=7, loc="upper left")
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def size_check(database_bytes: int, growth: float | None, now: datetime) -> dg.AssetCheckResult:
    """The guide's storage thresholds: WARN from 8 GB, ERROR from 15 GB, with the date the next is reached."""
    gib = database_bytes / capacity.GIB
    threshold, reached = capacity.next_threshold(database_bytes, growth, now)
    severity = dg.AssetCheckSeverity.ERROR if gib >= capacity.ERROR_AT_GB else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=SIZE_THRESHOLDS,
        asset_key=TABLE_SIZES,
        passed=gib < capacity.WARN_AT_GB,
        severity=severity,
        metadata={
            "database_gib": round(gib, 3),
            "growth_mib_per_day": round((growth or 0) / 1024**2, 3),
            "next_threshold_gb": threshold if threshold is not None else -1,
            "next_threshold_reached": reached.date().isoformat() if reached else "not growing",
        },
    )


def build_table_sizes(settings: Settings) -> tuple[dg.AssetsDefinition, dg.ScheduleDefinition]:
    @dg.asset(
        key=TABLE_SIZES,
        group_name=GROUP,
        kinds={"postgres"},
        check_specs=[
            dg.AssetCheckSpec(
                SIZE_THRESHOLDS,
                asset=TABLE_SIZES,
                description="the platform database stays under the guide's thresholds: WARN from 8 GB, ERROR from "
                "15 GB (3/8/15/25 GB), with the projected date of reaching the next",
            )
        ],
        description="Sizes of every table (total and data; partitions summed into their table), of the platform "
        "and Dagster instance databases and the free disk, appended to ops.table_size_history on every run; the "
        "metadata plots the largest tables over time.",
    )
    def table_sizes(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        now = datetime.now(UTC)
        instance_url = dagster_url()
        dagster_database = conninfo_to_dict(instance_url).get("dbname") if instance_url else None
        with warehouse.transaction() as conn:
            measured = measure_sizes(conn, dagster_database)
            copy_frame(conn, psycopg.sql.SQL("ops.table_size_history"), measured)
            history = read_frame(
                conn,
                "select measured_at, database_name, table_name, total_bytes, data_bytes from ops.table_size_history "
                "where database_name = current_database() and measured_at > now() - interval '400 days'",
                schema={"measured_at": pl.Datetime("us", "UTC"), **SIZE_SCHEMA},
            )
        database = history.filter(pl.col("table_name") == "(database)").select("measured_at", bytes="total_bytes")
        size = int(database.sort("measured_at")["bytes"][-1])
        growth = capacity.growth_per_day(database)
        plot = size_plot(history, settings.home / "reports" / "table_sizes.png")
        free = shutil.disk_usage(settings.home)
        top = measured.filter(pl.col("table_name") != "(database)").sort("total_bytes", descending=True).head(10)
        image = base64.b64encode(plot.read_bytes()).decode()
        return dg.MaterializeResult(
            metadata={
                "database_bytes": size,
                "free_disk_bytes": free.free,
                "tables_measured": measured.height,
                "largest_tables": dg.MetadataValue.md(
                    "\n".join(
                        f"- {r['table_name']}: {r['total_bytes'] / 1024**2:,.1f} MiB" for r in top.iter_rows(named=True)
                    )
                ),
                "plot": dg.MetadataValue.md(f"![largest tables](data:image/png;base64,{image})"),
                "plot_file": dg.MetadataValue.path(str(plot)),
                "projected_3_6_12_months_bytes": dg.MetadataValue.json(
                    [capacity.projected(size, growth, m) for m in (3, 6, 12)]
                ),
            },
            check_results=[size_check(size, growth, now)],
        )

    schedule = utc_schedule(
        "table_sizes_daily",
        "45 5 * * *",
        "Measure every table and database (the guide's table-size query and df -h, kept as history).",
        target=dg.AssetSelection.assets(TABLE_SIZES),
    )
    return table_sizes, schedule


BACKUP = dg.AssetKey([GROUP, "backup"])
RESTORE_TEST = dg.AssetKey([GROUP, "restore_test"])
BACKUP_RECENT = "backup_recent"
RESTORE_PASSED = "restore_test_passed"
BACKUP_MAX_AGE = timedelta(hours=26)


def dagster_url() -> str | None:
    """The Dagster instance database's URL (DAGSTER_PG_URL, in psycopg's form)."""
    url = os.environ.get("DAGSTER_PG_URL")
    return url.replace("postgresql+psycopg2://", "postgresql://", 1) if url else None


def record_dump(conn: psycopg.Connection, kind: str, made: dumps.Dump) -> None:
    conn.execute(
        "insert into ops.backup_log (kind, database_name, path, started_at, finished_at, bytes, sha256, table_rows, "
        "rotation) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (kind, made.database, str(made.path), made.started_at, made.finished_at, made.bytes, made.sha256,
         json.dumps(made.table_rows), made.rotation),
    )  # fmt: skip


def rotate(conn: psycopg.Connection) -> list[str]:
    """Remove the dumps past the rotation (7 daily, 4 weekly, every monthly) of each database; returns them."""
    removed = []
    for (database,) in conn.execute("select distinct database_name from ops.backup_log").fetchall():
        kept = conn.execute(
            "select path, rotation, started_at from ops.backup_log where database_name = %s and removed_at is null",
            (database,),
        ).fetchall()
        for path in dumps.expired_dumps([(Path(p), r, t) for p, r, t in kept]):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            conn.execute("update ops.backup_log set removed_at = now() where path = %s", (str(path),))
            removed.append(str(path))
    return removed


def backup_checks(conn: psycopg.Connection, now: datetime) -> list[dg.AssetCheckResult]:
    last = conn.execute(
        "select max(finished_at) from ops.backup_log where kind = 'platform' and removed_at is null"
    ).fetchone()[0]
    return [
        dg.AssetCheckResult(
            check_name=BACKUP_RECENT,
            asset_key=BACKUP,
            passed=last is not None and now - last < BACKUP_MAX_AGE,
            metadata={"last_backup": str(last), "max_age_hours": BACKUP_MAX_AGE.total_seconds() / 3600},
        )
    ]


def build_backups(settings: Settings) -> tuple[list[dg.AssetsDefinition], list[dg.ScheduleDefinition]]:
    folder = settings.backup_dir / "dumps"

    @dg.asset(
        key=BACKUP,
        group_name=GROUP,
        kinds={"postgres"},
        check_specs=[
            dg.AssetCheckSpec(
                BACKUP_RECENT, asset=BACKUP, description="the newest platform backup is younger than 26 hours"
            )
        ],
        description=f"pg_dump of the platform database and, separately, of the Dagster instance database (and a tar "
        "of each folder of TRADING_ASSETS_BACKUP_FOLDERS, such as models and trade logs) into "
        f"{folder} (directory format, {dumps.PARALLEL_JOBS} jobs, compression {dumps.COMPRESSION}, the pg_dump of "
        "the server's version, files 0600, a checksum, written under a temporary name and renamed), row counts "
        "taken in the dump's own snapshot, rotation 7 daily + 4 weekly + every monthly, ops.backup_log.",
    )
    def backup(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        url = warehouse.url
        made = []
        with warehouse.transaction() as conn:
            for kind, target in (("platform", url), ("dagster", dagster_url())):
                if target is None:
                    continue
                previous = [t for (t,) in conn.execute(
                    "select started_at from ops.backup_log where kind = %s", (kind,)
                )]  # fmt: skip
                dumped = dumps.dump(target, folder, previous)
                record_dump(conn, kind, dumped)
                made.append(dumped)
            for name, source in settings.backup_folders:
                previous = [t for (t,) in conn.execute(
                    "select started_at from ops.backup_log where kind = %s", (f"folder:{name}",)
                )]  # fmt: skip
                archived = dumps.archive_folder(source, folder, name, previous)
                record_dump(conn, f"folder:{name}", archived)
                made.append(archived)
            removed = rotate(conn)
            checks = backup_checks(conn, datetime.now(UTC))
        context.log.info(f"backups: {', '.join(str(d.path) for d in made)}; rotated out {len(removed)}")
        return dg.MaterializeResult(
            metadata={
                "backups": dg.MetadataValue.json(
                    [{"path": str(d.path), "bytes": d.bytes, "rotation": d.rotation, "sha256": d.sha256} for d in made]
                ),
                "removed": dg.MetadataValue.json(removed),
            },
            check_results=checks,
        )

    @dg.asset(
        key=RESTORE_TEST,
        group_name=GROUP,
        deps=[BACKUP],
        kinds={"postgres"},
        check_specs=[
            dg.AssetCheckSpec(
                RESTORE_PASSED,
                asset=RESTORE_TEST,
                description="the newest platform backup restores and every table has the rows it had at dump time",
            )
        ],
        description="Restore the newest platform backup into a scratch database, compare every table's row count "
        "with the counts taken at dump time, record the outcome in ops.backup_log, drop the scratch database.",
    )
    def restore_test(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        url = warehouse.url
        with warehouse.transaction() as conn:
            found = conn.execute(
                "select backup_id, path from ops.backup_log where kind = 'platform' and removed_at is null "
                "order by finished_at desc limit 1"
            ).fetchone()
        if found is None:
            raise ConfigError("no platform backup to restore: run ops/backup first")
        backup_id, path = found
        scratch = f"restore_test_{datetime.now(UTC):%Y%m%d%H%M%S}"
        try:
            differences = dumps.restore(url, Path(path), scratch)
        finally:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    psycopg.sql.SQL("drop database if exists {} with (force)").format(psycopg.sql.Identifier(scratch))
                )
        with warehouse.transaction() as conn:
            conn.execute(
                "update ops.backup_log set restore_checked_at = now(), restore_passed = %s where backup_id = %s",
                (not differences, backup_id),
            )
        return dg.MaterializeResult(
            metadata={
                "backup": path,
                "tables_differing": dg.MetadataValue.json({t: list(v) for t, v in differences.items()}),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=RESTORE_PASSED,
                    passed=not differences,
                    metadata={"differences": len(differences)},
                )
            ],
        )

    schedules = [
        utc_schedule(
            "backup_daily",
            "0 4 * * *",
            "The guide's 04:00 backup, with rotation (it replaces pg_dump | gzip and find -mtime +7).",
            target=dg.AssetSelection.assets(BACKUP),
        ),
    ]
    return [backup, restore_test], schedules


VACUUM = dg.AssetKey([GROUP, "vacuum_analyze"])
REINDEX = dg.AssetKey([GROUP, "reindex"])
# An index whose leaf pages are less than this full is rebuilt: a fresh b-tree is 90% full (fillfactor).
BLOAT_THRESHOLD = 0.30
HOT_SCHEMAS = ("trading", "market", "core_energy", "catalog", "stage1", "ops")


def hot_tables(conn: psycopg.Connection) -> list[str]:
    """Tables of the platform's schemas with rows changed since they were last analysed (leaf partitions and
    plain tables: VACUUM works on what holds rows)."""
    return [
        f"{schema}.{name}"
        for schema, name in conn.execute(
            "select schemaname, relname from pg_stat_user_tables where schemaname = any(%s) "
            "and (n_dead_tup > 0 or n_mod_since_analyze > 0) order by 1, 2",
            (list(HOT_SCHEMAS),),
        )
    ]


def vacuum_analyze(url: str, tables: list[str]) -> list[dict]:
    """VACUUM (ANALYZE) each table (outside a transaction, as VACUUM must run); what each took and freed."""
    done = []
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            started = datetime.now(UTC)
            name = psycopg.sql.Identifier(*table.split(".", 1))
            (before,) = conn.execute("select pg_total_relation_size(%s::regclass)", (table,)).fetchone()
            conn.execute(psycopg.sql.SQL("vacuum (analyze) {}").format(name))
            (after,) = conn.execute("select pg_total_relation_size(%s::regclass)", (table,)).fetchone()
            log_maintenance(conn, "vacuum_analyze", table, started, bytes_before=before, bytes_after=after)
            done.append({"table": table, "bytes_before": before, "bytes_after": after,
                         "seconds": round((datetime.now(UTC) - started).total_seconds(), 3)})  # fmt: skip
    return done


def index_bloat(conn: psycopg.Connection) -> list[tuple[str, float, str]]:
    """(index, share of its size that is bloat, how measured) for the b-tree indexes of the platform's tables:
    pgstattuple's leaf density where the extension is there, else the size estimated from row count and key
    widths (the statistics of ANALYZE) against the actual size."""
    indexes = conn.execute(
        "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "join pg_am a on a.oid = c.relam where c.relkind = 'i' and a.amname = 'btree' and n.nspname = any(%s) "
        "and pg_relation_size(c.oid) > 65536",
        (list(HOT_SCHEMAS),),
    ).fetchall()
    has_pgstattuple = conn.execute("select 1 from pg_extension where extname = 'pgstattuple'").fetchone() is not None
    measured = []
    for (index,) in indexes:
        if has_pgstattuple:
            (density,) = conn.execute("select avg_leaf_density from pgstatindex(%s)", (index,)).fetchone()
            measured.append((index, max(0.0, 1 - (density or 0) / 90), "pgstattuple"))
            continue
        (ideal, actual) = conn.execute(
            """
            -- an entry: its 8-byte header and key rounded up to 8 bytes, plus a 4-byte line pointer; a leaf page
            -- holds 8192 less its 24-byte header and 16-byte special space, 90%% full; plus the meta page
            select ceil(greatest(c.reltuples, 0) * (ceil((8 + coalesce(sum(s.avg_width), 8)) / 8.0) * 8 + 4)
                        / ((8192 - 24 - 16) * 0.9)) + 1,
                   pg_relation_size(c.oid) / 8192.0
            from pg_class c join pg_index i on i.indexrelid = c.oid
            join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = t.relnamespace
            left join pg_attribute a on a.attrelid = t.oid and a.attnum = any(i.indkey)
            left join pg_stats s on s.schemaname = n.nspname and s.tablename = t.relname and s.attname = a.attname
            where c.oid = %s::regclass group by c.reltuples, c.oid
            """,
            (index,),
        ).fetchone()
        measured.append((index, max(0.0, 1 - float(ideal) / float(actual)) if actual else 0.0, "estimate"))
    return measured


def reindex(url: str, threshold: float) -> list[dict]:
    """REINDEX CONCURRENTLY the indexes whose bloat exceeds `threshold` (writes go on meanwhile)."""
    done = []
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("select 1 from pg_available_extensions where name = 'pgstattuple'").fetchone():
            conn.execute("create extension if not exists pgstattuple")
        for index, bloat, method in index_bloat(conn):
            if bloat <= threshold:
                continue
            started = datetime.now(UTC)
            (before,) = conn.execute("select pg_relation_size(%s::regclass)", (index,)).fetchone()
            conn.execute(
                psycopg.sql.SQL("reindex index concurrently {}").format(psycopg.sql.Identifier(*index.split(".", 1)))
            )
            (after,) = conn.execute("select pg_relation_size(%s::regclass)", (index,)).fetchone()
            log_maintenance(
                conn,
                "reindex",
                index,
                started,
                bytes_before=before,
                bytes_after=after,
                detail={"bloat": round(bloat, 3), "measured_by": method},
            )
            done.append({"index": index, "bloat": round(bloat, 3), "bytes_before": before, "bytes_after": after})
    return done


def build_vacuum_reindex() -> tuple[list[dg.AssetsDefinition], list[dg.ScheduleDefinition]]:
    @dg.asset(
        key=VACUUM,
        group_name=GROUP,
        kinds={"postgres"},
        description="VACUUM (ANALYZE) of every table of the platform's schemas changed since its last analysis, "
        "each recorded in ops.maintenance_log with its duration and bytes before and after.",
    )
    def vacuum_asset(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            tables = hot_tables(conn)
        done = vacuum_analyze(warehouse.url, tables)
        return dg.MaterializeResult(
            metadata={
                "tables": len(done),
                "bytes_freed": sum(d["bytes_before"] - d["bytes_after"] for d in done),
                "work": dg.MetadataValue.json(done[:100]),
            }
        )

    @dg.asset(
        key=REINDEX,
        group_name=GROUP,
        kinds={"postgres"},
        description=f"REINDEX INDEX CONCURRENTLY of the b-tree indexes whose measured bloat exceeds "
        f"{BLOAT_THRESHOLD:.0%} (pgstattuple's leaf density against a fresh index's 90%, or, without the "
        "extension, the size estimated from row count and key widths against the actual size), each in "
        "ops.maintenance_log.",
    )
    def reindex_asset(warehouse: Warehouse) -> dg.MaterializeResult:
        done = reindex(warehouse.url, BLOAT_THRESHOLD)
        return dg.MaterializeResult(
            metadata={
                "indexes_rebuilt": len(done),
                "bytes_freed": sum(d["bytes_before"] - d["bytes_after"] for d in done),
                "work": dg.MetadataValue.json(done),
            }
        )

    schedules = [
        utc_schedule(
            "vacuum_weekly",
            "0 3 * * 0",
            "Weekly (Sunday 03:00 UTC): VACUUM (ANALYZE) of the tables that changed.",
            target=dg.AssetSelection.assets(VACUUM),
        ),
    ]
    return [vacuum_asset, reindex_asset], schedules


COMPRESSION_REPORT = dg.AssetKey([GROUP, "compression_report"])


def compression_rows(conn: psycopg.Connection) -> pl.DataFrame:
    """Per table with archives: the bytes its dropped partitions took in the database and in their zstd
    parquet archives, and the ratio (the guide's chunk-compression report, for the archive path)."""
    return read_frame(
        conn,
        "select table_name, count(*)::bigint as partitions, sum(rows)::bigint as rows, "
        "sum(db_bytes)::bigint as before_bytes, sum(file_bytes)::bigint as after_bytes, "
        "round(sum(db_bytes)::numeric / greatest(sum(file_bytes), 1), 2)::float8 as ratio "
        "from ops.retention_archives group by 1 order by 1",
        schema={
            "table_name": pl.String,
            "partitions": pl.Int64,
            "rows": pl.Int64,
            "before_bytes": pl.Int64,
            "after_bytes": pl.Int64,
            "ratio": pl.Float64,
        },
    )


def build_compression_report() -> dg.AssetsDefinition:
    @dg.asset(
        key=COMPRESSION_REPORT,
        group_name=GROUP,
        deps=[RETENTION],
        kinds={"postgres", "parquet"},
        description="Before/after bytes of compressed cold data per table: the database bytes of the partitions "
        "retention archived against their zstd parquet files, and how TOAST compression is set (lz4 where the "
        "server has it; TimescaleDB's availability as detected at migrate time).",
    )
    def compression_report(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.transaction() as conn:
            rows = compression_rows(conn)
            toast = conn.execute(
                "select detail from ops.maintenance_log where task = 'compression' order by log_id desc limit 1"
            ).fetchone()
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.md(
                    rows.to_pandas().to_markdown(index=False) if rows.height else "no archives"
                ),
                "toast": dg.MetadataValue.json(toast[0] if toast else {}),
                "bytes_saved": int((rows["before_bytes"] - rows["after_bytes"]).sum()) if rows.height else 0,
            }
        )

    return compression_report
