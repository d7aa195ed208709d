-- What the asset graph needs from the database to tell the truth: edits of the dimension tables reach the
-- rows they change, runs write only inside their window of dates, and sizes are known without counting.

-- A changed timezone or calendar changes every bar of the asset (bar times, expected sessions): its daily
-- bars, and through them every family, are queued from its first price. The time of the change is the data
-- version of market/dim_assets: a new asset changes no existing bar, so registering one is not a change.
alter table market.dim_assets add column if not exists attributes_changed_at timestamptz;

create or replace function market.queue_asset_attribute_change() returns trigger language plpgsql as $$
begin
    if (new.timezone, new.calendar) is distinct from (old.timezone, old.calendar) then
        new.attributes_changed_at := now();
        insert into market.bars_dirty (family, asset_id, dirty_from)
        select '1d', new.asset_id, min(p.trade_date) from market.price_histories p where p.asset_id = new.asset_id
        having min(p.trade_date) is not null
        on conflict (family, asset_id) do update
            set dirty_from = least(market.bars_dirty.dirty_from, excluded.dirty_from);
    end if;
    return new;
end
$$;
drop trigger if exists dim_assets_attributes on market.dim_assets;
create trigger dim_assets_attributes before update on market.dim_assets
    for each row execute function market.queue_asset_attribute_change();

-- A daily bar's position is looked up by (asset, bar_seq) but is not unique across the table: a run that
-- inserts a late day into one month renumbers that month, and the later months, still numbered the old
-- way, are rebuilt by the run that follows it. Every run checks the positions it writes.
drop index if exists market.price_bars_1d_asset_seq;
create index if not exists price_bars_1d_asset_seq on market.price_bars_1d (asset_id, bar_seq);

-- A timeframe row is retired with is_active = false, never deleted, so that the rebuild that follows also
-- removes its rows; its key (family, tf) never changes.
create or replace function market.guard_timeframe_rows() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        raise exception 'market.dim_timeframe: set is_active = false to retire % of family % instead of deleting it',
            old.tf, old.family;
    end if;
    if (new.family, new.tf) is distinct from (old.family, old.tf) then
        raise exception 'market.dim_timeframe: the key (family, tf) of % cannot change; insert a new row', old.tf;
    end if;
    return new;
end
$$;
drop trigger if exists dim_timeframe_guard on market.dim_timeframe;
create trigger dim_timeframe_guard before update or delete on market.dim_timeframe
    for each row execute function market.guard_timeframe_rows();

-- Every asset's bars of a family whose timeframes changed are queued from their first day.
create or replace function market.queue_timeframe_rebuilds() returns trigger language plpgsql as $$
begin
    insert into market.bars_dirty (family, asset_id, dirty_from)
    select f.family, a.asset_id, first_bar.trade_date
    from (select distinct family from changed_timeframes) f
    cross join market.dim_assets a
    cross join lateral (select min(b.trade_date) as trade_date from market.price_bars_1d b
                        where b.asset_id = a.asset_id) first_bar
    where first_bar.trade_date is not null
    on conflict (family, asset_id) do update
        set dirty_from = least(market.bars_dirty.dirty_from, excluded.dirty_from);
    return null;
end
$$;
drop trigger if exists dim_timeframe_inserted on market.dim_timeframe;
create trigger dim_timeframe_inserted after insert on market.dim_timeframe
    referencing new table as changed_timeframes
    for each statement execute function market.queue_timeframe_rebuilds();
drop trigger if exists dim_timeframe_updated on market.dim_timeframe;
create trigger dim_timeframe_updated after update on market.dim_timeframe
    referencing new table as changed_timeframes
    for each statement execute function market.queue_timeframe_rebuilds();

-- An EMA row is partial (its bar still forming) when it is a preview after the last canonical row of its
-- asset and timeframe. It is derived when read: stored, it would have to be rewritten in earlier months
-- whenever a bar completes, and a run would write outside its window.
create or replace view market.ema_multi_tf as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar,
       p.roll and p.trade_date > coalesce(p.last_canonical, '-infinity'::date) as is_partial_end
from (select asset_id, tf, trade_date, tf_days, roll, ema, ema_bar,
             max(trade_date) filter (where not roll) over (partition by asset_id, tf) as last_canonical
      from market.ema_multi_tf_packed) p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_iso as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar,
       p.roll and p.trade_date > coalesce(p.last_canonical, '-infinity'::date) as is_partial_end
from (select asset_id, tf, trade_date, tf_days, roll, ema, ema_bar,
             max(trade_date) filter (where not roll) over (partition by asset_id, tf) as last_canonical
      from market.ema_multi_tf_cal_iso_packed) p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_iso'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_us as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar,
       p.roll and p.trade_date > coalesce(p.last_canonical, '-infinity'::date) as is_partial_end
from (select asset_id, tf, trade_date, tf_days, roll, ema, ema_bar,
             max(trade_date) filter (where not roll) over (partition by asset_id, tf) as last_canonical
      from market.ema_multi_tf_cal_us_packed) p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_us'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_anchor_iso as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar,
       p.roll and p.trade_date > coalesce(p.last_canonical, '-infinity'::date) as is_partial_end
from (select asset_id, tf, trade_date, tf_days, roll, ema, ema_bar,
             max(trade_date) filter (where not roll) over (partition by asset_id, tf) as last_canonical
      from market.ema_multi_tf_cal_anchor_iso_packed) p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_anchor_iso'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_cal_anchor_us as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar,
       p.roll and p.trade_date > coalesce(p.last_canonical, '-infinity'::date) as is_partial_end
from (select asset_id, tf, trade_date, tf_days, roll, ema, ema_bar,
             max(trade_date) filter (where not roll) over (partition by asset_id, tf) as last_canonical
      from market.ema_multi_tf_cal_anchor_us_packed) p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_cal_anchor_us'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;
create or replace view market.ema_multi_tf_v2 as
select p.asset_id, p.tf, p.trade_date, u.period, p.tf_days, p.roll, u.ema, u.ema_bar,
       p.roll and p.trade_date > coalesce(p.last_canonical, '-infinity'::date) as is_partial_end
from (select asset_id, tf, trade_date, tf_days, roll, ema, ema_bar,
             max(trade_date) filter (where not roll) over (partition by asset_id, tf) as last_canonical
      from market.ema_multi_tf_v2_packed) p
cross join lateral unnest(
    (select l.periods from market.ema_layout l where l.family = 'ema_multi_tf_v2'), p.ema, p.ema_bar
) as u (period, ema, ema_bar)
where u.ema is not null;

drop index if exists market.ema_multi_tf_partial_end;
drop index if exists market.ema_multi_tf_cal_iso_partial_end;
drop index if exists market.ema_multi_tf_cal_us_partial_end;
drop index if exists market.ema_multi_tf_cal_anchor_iso_partial_end;
drop index if exists market.ema_multi_tf_cal_anchor_us_partial_end;
drop index if exists market.ema_multi_tf_v2_partial_end;
alter table market.ema_multi_tf_packed drop column if exists is_partial_end;
alter table market.ema_multi_tf_cal_iso_packed drop column if exists is_partial_end;
alter table market.ema_multi_tf_cal_us_packed drop column if exists is_partial_end;
alter table market.ema_multi_tf_cal_anchor_iso_packed drop column if exists is_partial_end;
alter table market.ema_multi_tf_cal_anchor_us_packed drop column if exists is_partial_end;
alter table market.ema_multi_tf_v2_packed drop column if exists is_partial_end;

-- Rows per month of the large market tables (EMAs: rows of their long views), kept by the writers in the
-- transaction that writes the rows: runs report exact table and partition sizes without counting millions
-- of rows. The validate job compares them with real counts.
create table if not exists ops.partition_rows (
    table_name text not null,
    month date not null check (extract(day from month) = 1),
    rows bigint not null check (rows >= 0),
    primary key (table_name, month)
);
insert into ops.partition_rows (table_name, month, rows)
select 'market.price_histories', date_trunc('month', trade_date)::date, count(*) from market.price_histories group by 2
union all
select 'market.price_bars_1d', date_trunc('month', trade_date)::date, count(*) from market.price_bars_1d group by 2
union all
select 'market.price_bars_multi_tf', date_trunc('month', trade_date)::date, count(*)
from market.price_bars_multi_tf group by 2
union all
select 'market.price_bars_multi_tf_cal_iso', date_trunc('month', trade_date)::date, count(*)
from market.price_bars_multi_tf_cal_iso group by 2
union all
select 'market.price_bars_multi_tf_cal_us', date_trunc('month', trade_date)::date, count(*)
from market.price_bars_multi_tf_cal_us group by 2
union all
select 'market.price_bars_multi_tf_cal_anchor_iso', date_trunc('month', trade_date)::date, count(*)
from market.price_bars_multi_tf_cal_anchor_iso group by 2
union all
select 'market.price_bars_multi_tf_cal_anchor_us', date_trunc('month', trade_date)::date, count(*)
from market.price_bars_multi_tf_cal_anchor_us group by 2
union all
select 'market.ema_multi_tf', date_trunc('month', trade_date)::date, count(*) from market.ema_multi_tf group by 2
union all
select 'market.ema_multi_tf_cal_iso', date_trunc('month', trade_date)::date, count(*)
from market.ema_multi_tf_cal_iso group by 2
union all
select 'market.ema_multi_tf_cal_us', date_trunc('month', trade_date)::date, count(*)
from market.ema_multi_tf_cal_us group by 2
union all
select 'market.ema_multi_tf_cal_anchor_iso', date_trunc('month', trade_date)::date, count(*)
from market.ema_multi_tf_cal_anchor_iso group by 2
union all
select 'market.ema_multi_tf_cal_anchor_us', date_trunc('month', trade_date)::date, count(*)
from market.ema_multi_tf_cal_anchor_us group by 2
union all
select 'market.ema_multi_tf_v2', date_trunc('month', trade_date)::date, count(*) from market.ema_multi_tf_v2 group by 2
on conflict do nothing;

-- One alert per event whoever notices it first (the run-failure sensor or the CLI that ran the run).
create table if not exists ops.alert_claims (
    dedupe_key text primary key,
    claimed_at timestamptz not null default now()
);
