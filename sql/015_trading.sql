-- trading: the tables of the data maintenance guide, loaded from files as assets of the `trading` group.
--
-- Tables with a retention in the guide are range-partitioned on their trading date so that retention drops whole
-- partitions instead of deleting rows. Users never name a partition: the table name is the table. The partition
-- unit is a day for tables with many rows a day (snapshots, minute bars) and a month for tables with one row a
-- day (VIX curve, macro signals), where a day partition would hold a single row and decades of history would be
-- tens of thousands of tables. trading.ensure_partitions creates what a write needs, in the writer's transaction,
-- and the platform creates the coming days' ahead of time.

create schema if not exists trading;

create table if not exists trading.partitioning (
    table_name text primary key,
    unit text not null check (unit in ('day', 'month'))
);
comment on table trading.partitioning is
    'How each range-partitioned table of trading is split on trade_date: one partition per day or per month';

create or replace function trading.ensure_partitions(p_table text, p_first date, p_last date) returns integer
language plpgsql as $$
declare
    v_unit text;
    v_step interval;
    v_start date;
    v_name text;
    v_created integer := 0;
begin
    select unit into v_unit from trading.partitioning where table_name = p_table;
    if v_unit is null then
        raise exception 'trading.% is not a partitioned table of trading.partitioning', p_table;
    end if;
    v_step := case v_unit when 'day' then interval '1 day' else interval '1 month' end;
    v_start := date_trunc(v_unit, p_first)::date;
    while v_start <= p_last loop
        v_name := p_table || '_p' || to_char(v_start, case v_unit when 'day' then 'YYYYMMDD' else 'YYYYMM' end);
        if to_regclass(format('trading.%I', v_name)) is null then
            execute format('create table trading.%I partition of trading.%I for values from (%L) to (%L)',
                           v_name, p_table, v_start, (v_start + v_step)::date);
            v_created := v_created + 1;
        end if;
        v_start := (v_start + v_step)::date;
    end loop;
    return v_created;
end
$$;
comment on function trading.ensure_partitions(text, date, date) is
    'Creates the missing partitions of trading.<p_table> covering p_first..p_last; returns how many it created';

-- Rows of a source file refused with their reason, like market.price_rejects: nothing is dropped silently.
create table if not exists trading.rejects (
    table_name text not null,
    source_file text not null,
    source_line integer not null,
    reason text not null,
    raw text,
    rejected_at timestamptz not null default now(),
    primary key (table_name, source_file, source_line, reason)
);

-- macro_signals: yield-curve slopes, CPI year over year and the unemployment change, as known on each date.
create table if not exists trading.macro_signals (
    trade_date date not null,
    dgs10 double precision,
    dgs2 double precision,
    dgs3mo double precision,
    slope_10y_2y double precision,
    slope_10y_3m double precision,
    cpi double precision,
    cpi_month date,
    cpi_yoy_pct double precision,
    unrate double precision,
    unrate_month date,
    unrate_change double precision,
    loaded_at timestamptz not null default now(),
    primary key (trade_date)
) partition by range (trade_date);
insert into trading.partitioning values ('macro_signals', 'month') on conflict do nothing;
comment on table trading.macro_signals is
    'Macro signals per Treasury business day, each monthly value only from the date it is known (its release)';

-- vix_term_structure: the VX futures curve per trading date, or the India VIX fallback without futures.
create table if not exists trading.vix_term_structure (
    trade_date date not null,
    exchange text not null,
    source text not null check (source in ('vx_futures', 'india_vix_fallback')),
    vix_spot double precision,
    front_contract text,
    front_expiry date,
    front_price double precision,
    next_contract text,
    next_expiry date,
    next_price double precision,
    curve double precision[],
    contango_pct double precision,
    roll_yield_pct double precision,
    realized_vol_5d double precision,
    realized_vol_20d double precision,
    loaded_at timestamptz not null default now(),
    primary key (trade_date, exchange)
) partition by range (trade_date);
insert into trading.partitioning values ('vix_term_structure', 'month') on conflict do nothing;
comment on column trading.vix_term_structure.contango_pct is
    '(next - front) / front * 100: positive in contango, negative in backwardation';

-- trade_history: paper trades, permanent. Rows are never deleted: a trigger refuses DELETE and TRUNCATE, and the
-- count of rows ever inserted is kept beside the table so a check can prove none went missing.
create table if not exists trading.trade_history (
    order_id text primary key,
    symbol text not null,
    side text not null check (side in ('buy', 'sell')),
    qty double precision not null check (qty > 0),
    price double precision not null check (price > 0),
    fees double precision not null default 0 check (fees >= 0),
    strategy text not null,
    submitted_at timestamptz not null,
    filled_at timestamptz not null,
    trade_date date not null,
    source_file text not null,
    source_line integer not null,
    loaded_at timestamptz not null default now(),
    check (filled_at >= submitted_at)
);

create table if not exists trading.trade_history_inserted (
    singleton boolean primary key default true check (singleton),
    rows_inserted bigint not null
);
insert into trading.trade_history_inserted values (true, 0) on conflict do nothing;

create or replace function trading.trade_history_permanent() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        update trading.trade_history_inserted set rows_inserted = rows_inserted + (select count(*) from inserted);
        return null;
    end if;
    raise exception 'trading.trade_history is permanent: % is refused', tg_op
        using errcode = 'restrict_violation', hint = 'a wrong trade is corrected by a new trade, not by removing one';
end
$$;

drop trigger if exists trade_history_counted on trading.trade_history;
create trigger trade_history_counted after insert on trading.trade_history
    referencing new table as inserted for each statement execute function trading.trade_history_permanent();
drop trigger if exists trade_history_no_delete on trading.trade_history;
create trigger trade_history_no_delete before delete on trading.trade_history
    for each statement execute function trading.trade_history_permanent();
drop trigger if exists trade_history_no_truncate on trading.trade_history;
create trigger trade_history_no_truncate before truncate on trading.trade_history
    for each statement execute function trading.trade_history_permanent();
