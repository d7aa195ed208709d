-- The research dataset triplet of the Stage 1 desktop client: its Stage 1.3 tables (walk-forward runs, folds,
-- simulations), the master table stage1_datasets over them, views and functions for the client, and the role
-- it connects as. The client's SQL names tables unqualified: the role's search_path is stage1.
-- backup before: indicator_datasets walkforward_runs walkforward_folds simulation_runs simulation_trades simulation_trade_buckets stage1_datasets

create schema if not exists stage1;

-- An existing Stage 1.3 database keeps its tables with every row, index and key: they move into stage1.
do $$
declare
    name text;
begin
    foreach name in array array['indicator_datasets', 'walkforward_runs', 'walkforward_folds', 'simulation_runs',
                                'simulation_trades', 'simulation_trade_buckets'] loop
        if to_regclass('public.' || name) is not null and to_regclass('stage1.' || name) is null then
            execute format('alter table public.%I set schema stage1', name);
        end if;
    end loop;
end $$;

-- A fresh install: the deployed Stage 1.3 shapes.
create table if not exists stage1.indicator_datasets (
    dataset_id         uuid primary key,
    symbol             text not null,
    granularity        text not null,
    source             text not null,
    questdb_tag        text not null unique,
    row_count          bigint not null check (row_count >= 0),
    first_bar_ts       timestamptz not null,
    last_bar_ts        timestamptz not null,
    created_at         timestamptz not null default now()
);
create index if not exists idx_indicator_datasets_symbol_granularity on stage1.indicator_datasets (symbol, granularity);

create table if not exists stage1.walkforward_runs (
    run_id                 uuid primary key,
    dataset_id             uuid not null,
    prediction_measurement text not null,
    target_column          text not null,
    feature_columns        jsonb not null,
    hyperparameters        jsonb not null,
    walk_config            jsonb not null,
    status                 text not null,
    requested_by           text,
    started_at             timestamptz,
    completed_at           timestamptz,
    duration_ms            bigint,
    summary_metrics        jsonb not null,
    created_at             timestamptz not null default now()
);
create index if not exists idx_walkforward_runs_dataset_created on stage1.walkforward_runs (dataset_id, created_at desc);

create table if not exists stage1.walkforward_folds (
    run_id             uuid not null references stage1.walkforward_runs (run_id) on delete cascade,
    fold_number        integer not null,
    train_start_idx    bigint not null,
    train_end_idx      bigint not null,
    test_start_idx     bigint not null,
    test_end_idx       bigint not null,
    samples_train      bigint not null,
    samples_test       bigint not null,
    best_iteration     integer,
    best_score         double precision,
    thresholds         jsonb not null,
    metrics            jsonb not null,
    primary key (run_id, fold_number)
);
create index if not exists idx_walkforward_folds_run on stage1.walkforward_folds (run_id);

create table if not exists stage1.simulation_runs (
    simulation_id         uuid primary key,
    run_id                uuid not null references stage1.walkforward_runs (run_id) on delete cascade,
    dataset_id            uuid not null,
    input_run_measurement text not null,
    questdb_namespace     text not null,
    mode                  text not null,
    config                jsonb not null,
    status                text not null,
    started_at            timestamptz,
    completed_at          timestamptz,
    summary_metrics       jsonb not null,
    created_at            timestamptz not null default now()
);
create index if not exists idx_simulation_runs_run_created on stage1.simulation_runs (run_id, created_at desc);

create table if not exists stage1.simulation_trades (
    trade_id           uuid primary key,
    simulation_id      uuid not null references stage1.simulation_runs (simulation_id) on delete cascade,
    bar_timestamp      timestamptz not null,
    side               text not null,
    size               double precision not null,
    entry_price        double precision not null,
    exit_price         double precision,
    pnl                double precision,
    return_pct         double precision,
    metadata           jsonb not null
);
create index if not exists idx_simulation_trades_sim_ts on stage1.simulation_trades (simulation_id, bar_timestamp);

create table if not exists stage1.simulation_trade_buckets (
    simulation_id     uuid not null references stage1.simulation_runs (simulation_id) on delete cascade,
    side              text not null,
    trade_count       bigint not null,
    win_count         bigint not null,
    profit_factor     double precision,
    avg_return_pct    double precision,
    max_drawdown_pct  double precision,
    notes             text,
    primary key (simulation_id, side)
);
create index if not exists idx_simulation_trade_buckets_sim on stage1.simulation_trade_buckets (simulation_id);

alter table stage1.walkforward_runs add column if not exists serialized_config text;

-- The client's granularities; its known '240m' (and the other minute spellings of an hour or a day) normalised.
create or replace function stage1.normalized_granularity(value text) returns text
language sql immutable as $$
    select case lower(btrim(value))
        when '60m' then '1h' when '240m' then '4h' when '1440m' then '1d' when '24h' then '1d'
        else lower(btrim(value)) end
$$;

create or replace function stage1.is_granularity(value text) returns boolean
language sql immutable as $$
    select value in ('1m', '5m', '15m', '30m', '1h', '4h', '1d')
$$;

-- The client's slug rule: lowercase letters and digits; any other run of characters becomes one '_', trimmed.
create or replace function stage1.normalized_slug(value text) returns text
language sql immutable as $$
    select btrim(regexp_replace(lower(value), '[^a-z0-9]+', '_', 'g'), '_')
$$;

-- ohlcv_measurement is nullable (the task list says NOT NULL, and empty on backfill): a legacy dataset has no
-- OHLCV measurement, and NULL says so in one way only; '' is refused so that "none" is never spelled twice.
create table if not exists stage1.stage1_datasets (
    dataset_id             uuid primary key,
    dataset_slug           text not null unique,
    symbol                 text,
    granularity            text check (granularity is null or stage1.is_granularity(granularity)),
    source                 text not null default 'laptop_imgui',
    ohlcv_measurement      text check (ohlcv_measurement <> ''),
    indicator_measurement  text not null check (indicator_measurement <> ''),
    ohlcv_row_count        bigint not null default 0 check (ohlcv_row_count >= 0),
    indicator_row_count    bigint not null default 0 check (indicator_row_count >= 0),
    ohlcv_first_ts         timestamptz,
    ohlcv_last_ts          timestamptz,
    indicator_first_ts     timestamptz,
    indicator_last_ts      timestamptz,
    metadata               jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);
create index if not exists idx_stage1_datasets_measurements
    on stage1.stage1_datasets (ohlcv_measurement, indicator_measurement);

create or replace function stage1.touch_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end $$;

drop trigger if exists stage1_datasets_updated_at on stage1.stage1_datasets;
create trigger stage1_datasets_updated_at before update on stage1.stage1_datasets
    for each row execute function stage1.touch_updated_at();

-- The master row of a legacy indicator dataset (the backfill, and a legacy client's insert).
create or replace function stage1.legacy_dataset_row(d stage1.indicator_datasets) returns stage1.stage1_datasets
language sql stable as $$
    select d.dataset_id, coalesce(d.questdb_tag, d.dataset_id::text), nullif(d.symbol, ''),
           case when stage1.is_granularity(stage1.normalized_granularity(nullif(d.granularity, '')))
                then stage1.normalized_granularity(d.granularity) end,
           coalesce(nullif(d.source, ''), 'legacy_import'), null::text, d.questdb_tag, 0::bigint, d.row_count,
           null::timestamptz, null::timestamptz, d.first_bar_ts, d.last_bar_ts,
           jsonb_strip_nulls(jsonb_build_object('legacy_source', 'indicator_datasets', 'legacy_granularity',
               case when not stage1.is_granularity(stage1.normalized_granularity(nullif(d.granularity, '')))
                    then d.granularity end)),
           d.created_at, now()
$$;

insert into stage1.stage1_datasets
select (stage1.legacy_dataset_row(d)).* from stage1.indicator_datasets d
on conflict do nothing;

-- A legacy client that still inserts into indicator_datasets keeps working: its row gets a master row first.
create or replace function stage1.indicator_dataset_master() returns trigger
language plpgsql as $$
begin
    insert into stage1.stage1_datasets select (stage1.legacy_dataset_row(new)).* on conflict do nothing;
    return new;
end $$;

drop trigger if exists indicator_datasets_master on stage1.indicator_datasets;
create trigger indicator_datasets_master before insert on stage1.indicator_datasets
    for each row execute function stage1.indicator_dataset_master();

-- Keys: datasets, runs and simulations hang off the master table.
do $$
declare
    fk record;
begin
    for fk in
        select c.conname, c.conrelid::regclass as rel from pg_constraint c
        where c.contype = 'f' and c.confrelid = 'stage1.indicator_datasets'::regclass
    loop
        execute format('alter table %s drop constraint %I', fk.rel, fk.conname);
    end loop;
    if not exists (select 1 from pg_constraint where conname = 'indicator_datasets_master_fk') then
        alter table stage1.indicator_datasets add constraint indicator_datasets_master_fk
            foreign key (dataset_id) references stage1.stage1_datasets (dataset_id) on delete cascade;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'walkforward_runs_dataset_fk') then
        alter table stage1.walkforward_runs add constraint walkforward_runs_dataset_fk
            foreign key (dataset_id) references stage1.stage1_datasets (dataset_id) on delete cascade;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'simulation_runs_dataset_fk') then
        alter table stage1.simulation_runs add constraint simulation_runs_dataset_fk
            foreign key (dataset_id) references stage1.stage1_datasets (dataset_id) on delete cascade;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'walkforward_runs_dataset_prediction_key') then
        alter table stage1.walkforward_runs add constraint walkforward_runs_dataset_prediction_key
            unique (dataset_id, prediction_measurement);
    end if;
    if not exists (select 1 from pg_constraint where conname = 'simulation_runs_run_namespace_key') then
        alter table stage1.simulation_runs add constraint simulation_runs_run_namespace_key
            unique (run_id, questdb_namespace);
    end if;
    -- Timestamps in milliseconds read as seconds land in the year 50,000; seconds read as milliseconds in 1970.
    -- New rows outside 1990..2100 are refused (NOT VALID: rows already stored stay, and a check lists them).
    if not exists (select 1 from pg_constraint where conname = 'walkforward_runs_sane_times') then
        alter table stage1.walkforward_runs add constraint walkforward_runs_sane_times check (
            (started_at is null or started_at between '1990-01-01' and '2100-01-01')
            and (completed_at is null or completed_at between '1990-01-01' and '2100-01-01')
            and created_at between '1990-01-01' and '2100-01-01') not valid;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'simulation_runs_sane_times') then
        alter table stage1.simulation_runs add constraint simulation_runs_sane_times check (
            (started_at is null or started_at between '1990-01-01' and '2100-01-01')
            and (completed_at is null or completed_at between '1990-01-01' and '2100-01-01')
            and created_at between '1990-01-01' and '2100-01-01') not valid;
    end if;
    if not exists (select 1 from pg_constraint where conname = 'simulation_trades_sane_times') then
        alter table stage1.simulation_trades add constraint simulation_trades_sane_times
            check (bar_timestamp between '1990-01-01' and '2100-01-01') not valid;
    end if;
end $$;

-- Insert or overwrite a dataset's master row; metadata is merged (stored || given, the given keys win).
create or replace function stage1.upsert_stage1_dataset(
    p_dataset_id uuid,
    p_dataset_slug text,
    p_symbol text,
    p_granularity text,
    p_source text,
    p_ohlcv_measurement text,
    p_indicator_measurement text,
    p_ohlcv_row_count bigint,
    p_indicator_row_count bigint,
    p_ohlcv_first_ts timestamptz,
    p_ohlcv_last_ts timestamptz,
    p_indicator_first_ts timestamptz,
    p_indicator_last_ts timestamptz,
    p_metadata jsonb
) returns stage1.stage1_datasets
language plpgsql as $$
declare
    other uuid;
    granularity text := stage1.normalized_granularity(p_granularity);
    given jsonb := case when jsonb_typeof(p_metadata) = 'object' then p_metadata else '{}'::jsonb end;
    stored stage1.stage1_datasets;
begin
    if p_dataset_id is null then
        raise exception 'upsert_stage1_dataset: dataset_id is required' using errcode = 'not_null_violation';
    end if;
    if p_dataset_slug is null or p_dataset_slug <> stage1.normalized_slug(p_dataset_slug) then
        raise exception 'upsert_stage1_dataset: slug "%" is not a slug (lowercase letters and digits joined by _; '
            'the client''s rule gives "%")', p_dataset_slug, stage1.normalized_slug(p_dataset_slug)
            using errcode = 'check_violation';
    end if;
    if granularity is not null and not stage1.is_granularity(granularity) then
        raise exception 'upsert_stage1_dataset: granularity "%" is not one of 1m 5m 15m 30m 1h 4h 1d', p_granularity
            using errcode = 'check_violation';
    end if;
    select d.dataset_id into other from stage1.stage1_datasets d
    where d.dataset_slug = p_dataset_slug and d.dataset_id <> p_dataset_id;
    if found then
        raise exception 'upsert_stage1_dataset: slug "%" is already used by dataset %', p_dataset_slug, other
            using errcode = 'unique_violation';
    end if;
    insert into stage1.stage1_datasets as d (
        dataset_id, dataset_slug, symbol, granularity, source, ohlcv_measurement, indicator_measurement,
        ohlcv_row_count, indicator_row_count, ohlcv_first_ts, ohlcv_last_ts, indicator_first_ts, indicator_last_ts,
        metadata
    ) values (
        p_dataset_id, p_dataset_slug, p_symbol, granularity, coalesce(p_source, 'laptop_imgui'),
        nullif(p_ohlcv_measurement, ''), p_indicator_measurement, coalesce(p_ohlcv_row_count, 0),
        coalesce(p_indicator_row_count, 0), p_ohlcv_first_ts, p_ohlcv_last_ts, p_indicator_first_ts,
        p_indicator_last_ts, given
    )
    on conflict (dataset_id) do update set
        dataset_slug = excluded.dataset_slug,
        symbol = excluded.symbol,
        granularity = excluded.granularity,
        source = excluded.source,
        ohlcv_measurement = excluded.ohlcv_measurement,
        indicator_measurement = excluded.indicator_measurement,
        ohlcv_row_count = excluded.ohlcv_row_count,
        indicator_row_count = excluded.indicator_row_count,
        ohlcv_first_ts = excluded.ohlcv_first_ts,
        ohlcv_last_ts = excluded.ohlcv_last_ts,
        indicator_first_ts = excluded.indicator_first_ts,
        indicator_last_ts = excluded.indicator_last_ts,
        metadata = coalesce(d.metadata, '{}'::jsonb) || excluded.metadata
    returning * into stored;
    return stored;
end $$;

create or replace view stage1.dataset_catalog as
select d.*,
       (select count(*) from stage1.walkforward_runs r where r.dataset_id = d.dataset_id) as run_count,
       (select count(*) from stage1.simulation_runs s where s.dataset_id = d.dataset_id) as simulation_count
from stage1.stage1_datasets d;

create or replace view stage1.dataset_hierarchy as
select d.dataset_id, d.dataset_slug, d.ohlcv_measurement, d.indicator_measurement,
       r.run_id, r.prediction_measurement, r.serialized_config, r.status as run_status,
       s.simulation_id, s.questdb_namespace, s.status
from stage1.stage1_datasets d
left join stage1.walkforward_runs r on r.dataset_id = d.dataset_id
left join stage1.simulation_runs s on s.run_id = r.run_id;

create or replace function stage1.fn_list_datasets(p_limit integer default 50, p_offset integer default 0)
returns setof stage1.dataset_catalog
language sql stable as $$
    select * from stage1.dataset_catalog order by updated_at desc, dataset_id limit p_limit offset p_offset
$$;

create or replace function stage1.fn_list_runs(
    p_dataset_id uuid default null, p_limit integer default 50, p_offset integer default 0
) returns table (
    run_id uuid, dataset_id uuid, dataset_slug text, ohlcv_measurement text, indicator_measurement text,
    prediction_measurement text, target_column text, status text, started_at timestamptz,
    completed_at timestamptz, created_at timestamptz
)
language sql stable as $$
    select r.run_id, r.dataset_id, d.dataset_slug, d.ohlcv_measurement, d.indicator_measurement,
           r.prediction_measurement, r.target_column, r.status, r.started_at, r.completed_at, r.created_at
    from stage1.walkforward_runs r join stage1.stage1_datasets d using (dataset_id)
    where p_dataset_id is null or r.dataset_id = p_dataset_id
    order by r.created_at desc, r.run_id limit p_limit offset p_offset
$$;

create or replace function stage1.fn_list_simulations(
    p_run_id uuid default null, p_limit integer default 50, p_offset integer default 0
) returns table (
    simulation_id uuid, run_id uuid, dataset_id uuid, dataset_slug text, ohlcv_measurement text,
    indicator_measurement text, questdb_namespace text, mode text, status text, created_at timestamptz
)
language sql stable as $$
    select s.simulation_id, s.run_id, s.dataset_id, d.dataset_slug, d.ohlcv_measurement, d.indicator_measurement,
           s.questdb_namespace, s.mode, s.status, s.created_at
    from stage1.simulation_runs s join stage1.stage1_datasets d using (dataset_id)
    where p_run_id is null or s.run_id = p_run_id
    order by s.created_at desc, s.simulation_id limit p_limit offset p_offset
$$;

-- Every statement of the client's spool the platform has read (a statement spooled twice is one row): landed,
-- refused (never run: not an INSERT into a Stage 1 table, or cut off) or waiting (it failed, e.g. its parent row
-- has not arrived; every replay retries it), with the file and place it was first seen and why.
create table if not exists stage1.spool_statements (
    statement_sha256  text primary key,
    file_sha256       text not null,
    file_name         text not null,
    position          integer not null check (position >= 1),
    line              integer not null check (line >= 1),
    target_table      text,
    statement         text not null,
    outcome           text not null check (outcome in ('landed', 'refused', 'waiting')),
    reason            text,
    sqlstate          text,
    attempts          integer not null default 0,
    first_seen        timestamptz not null default now(),
    last_tried        timestamptz,
    landed_at         timestamptz
);
create index if not exists spool_statements_waiting on stage1.spool_statements (first_seen, file_name, position)
    where outcome = 'waiting';

-- One row per replayed spool file (by content: a file is replayed once) and per retry of what waits.
create table if not exists stage1.spool_replays (
    replay_id      bigint generated always as identity primary key,
    file_sha256    text unique,
    file_name      text,
    statements     integer not null default 0,
    landed         integer not null,
    waiting_after  integer not null,
    replayed_at    timestamptz not null default now()
);

-- The client's role: it reads and writes the Stage 1 tables and calls the functions; nothing else.
do $$
begin
    create role stage1_app nologin;
exception when duplicate_object or unique_violation then
    null;
end $$;
alter role stage1_app set search_path = stage1;
revoke all on schema stage1 from public;
grant usage on schema stage1 to stage1_app;
grant select, insert, update on stage1.stage1_datasets, stage1.indicator_datasets, stage1.walkforward_runs,
    stage1.walkforward_folds, stage1.simulation_runs, stage1.simulation_trades, stage1.simulation_trade_buckets
    to stage1_app;
grant select on stage1.dataset_catalog, stage1.dataset_hierarchy to stage1_app;
revoke all on all functions in schema stage1 from public;
grant execute on function stage1.upsert_stage1_dataset(uuid, text, text, text, text, text, text, bigint, bigint,
    timestamptz, timestamptz, timestamptz, timestamptz, jsonb), stage1.fn_list_datasets(integer, integer),
    stage1.fn_list_runs(uuid, integer, integer), stage1.fn_list_simulations(uuid, integer, integer),
    stage1.normalized_granularity(text), stage1.is_granularity(text), stage1.normalized_slug(text),
    stage1.legacy_dataset_row(stage1.indicator_datasets), stage1.indicator_dataset_master(),
    stage1.touch_updated_at() to stage1_app;
