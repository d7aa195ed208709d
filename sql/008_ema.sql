-- EMAs over every bar family (DESIGN §5-§6). Each family is stored packed: one row per asset, timeframe and
-- daily close with one array element per period (the periods of market.ema_layout), about a third of the
-- size of one row per period. The contract's long shape, one row per period, is a view of the same name.
create table if not exists market.dim_ema_period (
    period integer primary key check (period >= 1),
    is_active boolean not null default true
);
insert into market.dim_ema_period (period) values (9), (10), (21), (50), (100), (200) on conflict do nothing;

-- The periods each family's arrays were built with; a family whose active periods changed is rebuilt.
create table if not exists market.ema_layout (
    family text primary key,
    periods integer[] not null check (cardinality(periods) >= 1)
);

create table if not exists market.ema_multi_tf_packed (
    asset_id integer not null,
    tf text not null,
    trade_date date not null,
    tf_days integer not null,
    roll boolean not null,
    is_partial_end boolean not null,
    -- closes the bar EMA has taken in so far (canonical ones; daily ones for v2) and their sum: what a
    -- period not yet seeded needs to continue
    n_closes integer not null,
    close_sum double precision not null,
    -- one element per period of market.ema_layout (null before that period's seed)
    ema double precision[] not null,
    ema_bar double precision[] not null,
    built_at timestamptz not null default now(),
    primary key (asset_id, tf, trade_date)
);
create index if not exists ema_multi_tf_canonical on market.ema_multi_tf_packed (asset_id, tf, trade_date) where not roll;
create index if not exists ema_multi_tf_partial_end on market.ema_multi_tf_packed (asset_id, tf) where is_partial_end;
create table if not exists market.ema_multi_tf_cal_iso_packed (like market.ema_multi_tf_packed including all);
create index if not exists ema_multi_tf_cal_iso_canonical on market.ema_multi_tf_cal_iso_packed (asset_id, tf, trade_date) where not roll;
create index if not exists ema_multi_tf_cal_iso_partial_end on market.ema_multi_tf_cal_iso_packed (asset_id, tf) where is_partial_end;
create table if not exists market.ema_multi_tf_cal_us_packed (like market.ema_multi_tf_packed including all);
create index if not exists ema_multi_tf_cal_us_canonical on market.ema_multi_tf_cal_us_packed (asset_id, tf, trade_date) where not roll;
create index if not exists ema_multi_tf_cal_us_partial_end on market.ema_multi_tf_cal_us_packed (asset_id, tf) where is_partial_end;
create table if not exists market.ema_multi_tf_cal_anchor_iso_packed (like market.ema_multi_tf_packed including all);
create index if not exists ema_multi_tf_cal_anchor_iso_canonical on market.ema_multi_tf_cal_anchor_iso_packed (asset_id, tf, trade_date) where not roll;
create index if not exists ema_multi_tf_cal_anchor_iso_partial_end on market.ema_multi_tf_cal_anchor_iso_packed (asset_id, tf) where is_partial_end;
create table if not exists market.ema_multi_tf_cal_anchor_us_packed (like market.ema_multi_tf_packed including all);
create index if not exists ema_multi_tf_cal_anchor_us_canonical on market.ema_multi_tf_cal_anchor_us_packed (asset_id, tf, trade_date) where not roll;
create index if not exists ema_multi_tf_cal_anchor_us_partial_end on market.ema_multi_tf_cal_anchor_us_packed (asset_id, tf) where is_partial_end;
create table if not exists market.ema_multi_tf_v2_packed (like market.ema_multi_tf_packed including all);
create index if not exists ema_multi_tf_v2_canonical on market.ema_multi_tf_v2_packed (asset_id, tf, trade_date) where not roll;
create index if not exists ema_multi_tf_v2_partial_end on market.ema_multi_tf_v2_packed (asset_id, tf) where is_partial_end;

create or replace view market.ema_multi_tf as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar, p.is_partial_end
from market.ema_multi_tf_packed p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_iso as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar, p.is_partial_end
from market.ema_multi_tf_cal_iso_packed p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_iso'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_us as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar, p.is_partial_end
from market.ema_multi_tf_cal_us_packed p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_us'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_anchor_iso as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar, p.is_partial_end
from market.ema_multi_tf_cal_anchor_iso_packed p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_anchor_iso'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_anchor_us as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar, p.is_partial_end
from market.ema_multi_tf_cal_anchor_us_packed p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_anchor_us'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_v2 as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar, p.is_partial_end
from market.ema_multi_tf_v2_packed p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_v2'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;

-- Every family in one shape, always current (a view: nothing to sync, nothing to go stale).
create or replace view market.ema_multi_tf_u as
select 'multi_tf'::text as alignment_source, * from market.ema_multi_tf
union all
select 'multi_tf_cal_iso'::text as alignment_source, * from market.ema_multi_tf_cal_iso
union all
select 'multi_tf_cal_us'::text as alignment_source, * from market.ema_multi_tf_cal_us
union all
select 'multi_tf_cal_anchor_iso'::text as alignment_source, * from market.ema_multi_tf_cal_anchor_iso
union all
select 'multi_tf_cal_anchor_us'::text as alignment_source, * from market.ema_multi_tf_cal_anchor_us
union all
select 'multi_tf_v2'::text as alignment_source, * from market.ema_multi_tf_v2;

-- EMA values that fail validation: NaN, infinite or negative (blocking), or outside [0.5 x min, 2 x max] of
-- the closes of the row's own window (warning; the EMA is still stored). Rebuilt rows replace theirs.
create table if not exists market.ema_rejects (
    family text not null,
    asset_id integer not null,
    tf text not null,
    period integer not null,
    trade_date date not null,
    value_column text not null check (value_column in ('ema', 'ema_bar')),
    value double precision,
    violation_type text not null check (violation_type in ('nan', 'infinity', 'negative', 'out_of_price_bounds')),
    bounds jsonb,
    source_close double precision,
    created_at timestamptz not null default now(),
    primary key (family, asset_id, tf, period, trade_date, value_column, violation_type)
);

-- Bars built before the EMA tables existed are queued for them from their first date (a migration runs
-- once; on a new database there is nothing to queue).
insert into market.bars_dirty (family, asset_id, dirty_from)
select f.family, b.asset_id, min(b.trade_date)
from market.price_bars_1d b
cross join (values ('ema_multi_tf'), ('ema_multi_tf_cal_iso'), ('ema_multi_tf_cal_us'), ('ema_multi_tf_cal_anchor_iso'), ('ema_multi_tf_cal_anchor_us'), ('ema_multi_tf_v2')) as f (family)
group by f.family, b.asset_id
on conflict (family, asset_id) do update set dirty_from = least(market.bars_dirty.dirty_from, excluded.dirty_from);

-- Alerts raised by sensors and the CLI, delivered or not: what was said, to whom, and what came of it.
create table if not exists ops.alerts (
    alert_id bigint generated always as identity primary key,
    created_at timestamptz not null default now(),
    severity text not null check (severity in ('CRITICAL', 'ERROR', 'WARNING', 'INFO')),
    title text not null,
    body text not null default '',
    source text not null,
    channel text not null check (channel in ('telegram', 'webhook', 'log')),
    status text not null check (status in ('sent', 'failed', 'below_threshold', 'logged')),
    error text,
    delivered_at timestamptz
);
create index if not exists alerts_created on ops.alerts (created_at);
