-- ops: what the maintenance calendar did. Every task writes its own row, so the UI and SQL show when each ran,
-- what it touched and what it cost.

create table if not exists ops.maintenance_log (
    log_id bigint generated always as identity primary key,
    task text not null,
    target text not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    bytes_before bigint,
    bytes_after bigint,
    rows bigint,
    outcome text not null check (outcome in ('done', 'skipped', 'failed')),
    detail jsonb not null default '{}'
);
create index if not exists maintenance_log_task on ops.maintenance_log (task, started_at desc);

-- Partitions retention archived and dropped: the archive is the only copy of their rows.
create table if not exists ops.retention_archives (
    table_name text not null,
    partition_name text not null,
    range_start date not null,
    range_end date not null,
    rows bigint not null,
    db_bytes bigint not null,
    file text not null,
    file_bytes bigint not null,
    sha256 text not null,
    archived_at timestamptz not null default now(),
    reattached_at timestamptz,
    primary key (table_name, partition_name, archived_at)
);

create table if not exists ops.table_size_history (
    measured_at timestamptz not null,
    database_name text not null,
    table_name text not null,
    total_bytes bigint not null,
    data_bytes bigint not null,
    primary key (measured_at, database_name, table_name)
);

create table if not exists ops.backup_log (
    backup_id bigint generated always as identity primary key,
    kind text not null,
    database_name text not null,
    path text not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    bytes bigint not null,
    sha256 text not null,
    table_rows jsonb not null,
    rotation text not null check (rotation in ('daily', 'weekly', 'monthly')),
    removed_at timestamptz,
    restore_checked_at timestamptz,
    restore_passed boolean
);
