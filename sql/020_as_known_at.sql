-- Reads "as known at" a time: every revision of a price, a series value and a symbol version keeps the interval
-- of knowledge time [known_from, known_until) during which the platform held it, so a backtest can ask what
-- it would have seen then. The current tables stay what every other reader uses.

-- A price row replaced (by a load's revision or by a SQL edit) or deleted keeps its old values here, and queues
-- its asset's bars from its date. Knowledge times are transaction times: the revision's now() is both the old
-- row's end and the new row's loaded_at.
create table if not exists market.price_revisions (
    asset_id integer not null,
    trade_date date not null,
    ts timestamptz,
    open double precision not null,
    high double precision not null,
    low double precision not null,
    close double precision not null,
    volume double precision,
    source_file text not null,
    source_line integer,
    known_from timestamptz not null,
    known_until timestamptz not null,
    primary key (asset_id, trade_date, known_until),
    check (known_until > known_from)
);

create or replace function market.keep_price_revision() returns trigger language plpgsql as $$
begin
    if tg_op = 'UPDATE' then
        if (new.ts, new.open, new.high, new.low, new.close, new.volume)
           is not distinct from (old.ts, old.open, old.high, old.low, old.close, old.volume) then
            return new;
        end if;
        -- A SQL edit is new knowledge now, whatever loaded_at it sets.
        new.loaded_at := now();
    end if;
    -- The daily bars (and through them every family) follow the change from its date, whoever made it.
    insert into market.bars_dirty (family, asset_id, dirty_from) values ('1d', old.asset_id, old.trade_date)
    on conflict (family, asset_id) do update set dirty_from = least(market.bars_dirty.dirty_from, excluded.dirty_from);
    -- A row written and rewritten inside one transaction was never visible to anyone: nothing to keep.
    if old.loaded_at < now() then
        insert into market.price_revisions
            (asset_id, trade_date, ts, open, high, low, close, volume, source_file, source_line, known_from, known_until)
        values (old.asset_id, old.trade_date, old.ts, old.open, old.high, old.low, old.close, old.volume,
                old.source_file, old.source_line, old.loaded_at, now())
        on conflict do nothing;
    end if;
    return case when tg_op = 'DELETE' then old else new end;
end
$$;
drop trigger if exists price_histories_revisions on market.price_histories;
create trigger price_histories_revisions before update or delete on market.price_histories
    for each row execute function market.keep_price_revision();

-- The price rows the platform held at `known_at`, optionally of some assets and dates; known_from is when
-- each row's values were recorded.
create or replace function market.price_histories_as_known_at(
    known_at timestamptz,
    asset_ids integer[] default null,
    first_date date default null,
    last_date date default null
) returns table (
    asset_id integer, trade_date date, ts timestamptz, open double precision, high double precision,
    low double precision, close double precision, volume double precision, source_file text, source_line integer,
    known_from timestamptz
) language sql stable as $$
    select p.asset_id, p.trade_date, p.ts, p.open, p.high, p.low, p.close, p.volume, p.source_file, p.source_line,
           p.loaded_at
    from market.price_histories p
    where p.loaded_at <= known_at
      and (asset_ids is null or p.asset_id = any(asset_ids))
      and (first_date is null or p.trade_date >= first_date)
      and (last_date is null or p.trade_date <= last_date)
    union all
    select r.asset_id, r.trade_date, r.ts, r.open, r.high, r.low, r.close, r.volume, r.source_file, r.source_line,
           r.known_from
    from market.price_revisions r
    where r.known_from <= known_at and r.known_until > known_at
      and (asset_ids is null or r.asset_id = any(asset_ids))
      and (first_date is null or r.trade_date >= first_date)
      and (last_date is null or r.trade_date <= last_date)
$$;

-- Daily bars as they would have been built at `known_at`, recomputed from the prices held then (bars are not
-- stored per knowledge time). Only what needs no exchange calendar: position, OHLCV with the high/low repair,
-- bar times in the asset's timezone. The missing-session columns come with the Python API
-- (trading_assets.market.daily_bars(as_known_at=...)), which runs the bar builder itself.
create or replace function market.price_bars_1d_as_known_at(
    known_at timestamptz,
    asset_ids integer[] default null,
    first_date date default null,
    last_date date default null
) returns table (
    asset_id integer, trade_date date, bar_seq bigint, open double precision, high double precision,
    low double precision, close double precision, volume double precision, repaired_high boolean,
    repaired_low boolean, time_open_bar timestamptz, time_close_bar timestamptz
) language sql stable as $$
    select b.asset_id, b.trade_date, b.bar_seq, b.open, greatest(b.high, b.open, b.close), least(b.low, b.open, b.close),
           b.close, b.volume, b.high < greatest(b.open, b.close), b.low > least(b.open, b.close),
           b.trade_date::timestamp at time zone a.timezone, (b.trade_date + 1)::timestamp at time zone a.timezone
    from (
        select k.*, row_number() over (partition by k.asset_id order by k.trade_date) as bar_seq
        from market.price_histories_as_known_at(known_at, asset_ids, null, last_date) k
        -- what the bar build refuses (the load refuses most of it already)
        where k.open > 0 and k.high > 0 and k.low > 0 and k.close > 0
          and k.open < 'infinity' and k.high < 'infinity' and k.low < 'infinity' and k.close < 'infinity'
          and (k.volume is null or (k.volume >= 0 and k.volume < 'infinity'))
    ) b
    join market.dim_assets a using (asset_id)
    where first_date is null or b.trade_date >= first_date
$$;

-- Series observations held at `known_at` (the history table keeps every superseded value).
create or replace function core_energy.series_values_as_known_at(known_at timestamptz)
returns table (series_code text, obs_date date, value double precision, known_from timestamptz)
language sql stable as $$
    select series_code, obs_date, value, loaded_at from core_energy.fact_series_value where loaded_at <= known_at
    union all
    select h.series_code, h.obs_date, h.value, h.loaded_at from core_energy.fact_series_value_history h
    where h.loaded_at <= known_at and h.superseded_at > known_at
$$;

-- Symbol versions with the knowledge interval of each: a re-derivation (a late snapshot, a correction) ends
-- the versions it no longer produces and starts the new ones; catalog.symbols is the set still known now.
-- Same columns as catalog.symbols, then the two knowledge times: a column added there is added here too.
create table if not exists catalog.symbol_versions_known (
    like catalog.symbols,
    known_from timestamptz not null,
    known_until timestamptz,
    check (known_until is null or known_until > known_from)
);
create index if not exists symbol_versions_known_symbol on catalog.symbol_versions_known (symbol, known_from);
insert into catalog.symbol_versions_known
select s.*, s.recorded_at, null from catalog.symbols s
where not exists (select 1 from catalog.symbol_versions_known);

-- Every symbol version the catalog held at `known_at` (valid at any time; filter on valid_from/valid_until).
create or replace function catalog.symbols_as_known_at(known_at timestamptz)
returns setof catalog.symbols language sql stable as $$
    select symbol, valid_from, valid_until, exchange, base, quote, type, subtype, profile, description, sector,
           industry, country, pricescale, minmov, tick_size, lot_size, min_qty, min_notional, contract_size,
           timezone, session, active, status, recorded_at
    from catalog.symbol_versions_known
    where known_from <= known_at and (known_until is null or known_until > known_at)
$$;
