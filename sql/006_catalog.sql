-- Symbol and exchange catalogs with point-in-time history. The observation logs are the truth; the
-- version tables are derived from them (trading_assets.compute.scd2) and rewritten per key.
create schema if not exists catalog;

-- A version as a box: x = the key's 64-bit hash, y = [valid_from, valid_until) in epoch microseconds, its
-- top pulled in by half a microsecond because boxes include their edges and versions are half-open. Versions
-- of one key overlap as boxes exactly when they overlap in time; different keys never share an x. This
-- gives a real exclusion constraint with built-in GiST support (btree_gist is not in every server); boxes
-- measured 5x faster to index than an equivalent numrange. Exact to the microsecond until the year 2112.
-- Immutable: the epoch of a timestamptz does not depend on the session's time zone.
create or replace function catalog.version_box(version_key text, valid_from timestamptz, valid_until timestamptz)
returns box language sql immutable parallel safe as $$
    select box(
        point(hashtextextended(version_key, 0)::float8, extract(epoch from valid_from)::float8 * 1e6),
        point(hashtextextended(version_key, 0)::float8,
              coalesce(extract(epoch from valid_until)::float8 * 1e6, 1e17) - 0.5))
$$;

create table if not exists catalog.symbol_observations (
    observation_id bigint generated always as identity primary key,
    symbol text not null check (symbol ~ '^[A-Z0-9_.!-]+:[^ ]+$'),
    action text not null check (action in ('upsert', 'retire')),
    effective_at timestamptz not null,
    recorded_at timestamptz not null default now(),
    source text not null,
    exchange text, base text, quote text, type text, subtype text, profile text, description text,
    sector text, industry text, country text,
    pricescale bigint check (pricescale > 0),
    minmov bigint check (minmov > 0),
    tick_size double precision check (tick_size > 0),
    lot_size double precision check (lot_size >= 0),
    min_qty double precision check (min_qty >= 0),
    min_notional double precision check (min_notional >= 0),
    contract_size double precision check (contract_size > 0),
    timezone text, session text, active boolean, status text
);
create index if not exists symbol_observations_symbol on catalog.symbol_observations (symbol, effective_at);

-- Full snapshots of an exchange: who was listed at that instant (the absent are retired).
create table if not exists catalog.exchange_snapshots (
    exchange text not null,
    effective_at timestamptz not null,
    recorded_at timestamptz not null default now(),
    source text not null,
    symbols text[] not null,
    primary key (exchange, effective_at)
);

create table if not exists catalog.symbols (
    symbol text not null,
    valid_from timestamptz not null,
    valid_until timestamptz,
    exchange text, base text, quote text, type text, subtype text, profile text, description text,
    sector text, industry text, country text,
    pricescale bigint, minmov bigint, tick_size double precision, lot_size double precision,
    min_qty double precision, min_notional double precision, contract_size double precision,
    timezone text, session text, active boolean not null, status text,
    recorded_at timestamptz not null,
    primary key (symbol, valid_from),
    check (valid_until is null or valid_until > valid_from),
    constraint symbols_versions_do_not_overlap
        exclude using gist (catalog.version_box(symbol, valid_from, valid_until) with &&)
);
create unique index if not exists symbols_one_current on catalog.symbols (symbol) where valid_until is null;

create table if not exists catalog.exchange_observations (
    observation_id bigint generated always as identity primary key,
    exchange text not null check (exchange ~ '^[A-Z0-9_.!-]+$'),
    action text not null default 'upsert' check (action = 'upsert'),
    effective_at timestamptz not null,
    recorded_at timestamptz not null default now(),
    source text not null,
    country text, timezone text, is_crypto boolean, calendar text, description text
);

create table if not exists catalog.exchanges (
    exchange text not null,
    valid_from timestamptz not null,
    valid_until timestamptz,
    country text, timezone text, is_crypto boolean, calendar text, description text,
    recorded_at timestamptz not null,
    primary key (exchange, valid_from),
    check (valid_until is null or valid_until > valid_from),
    constraint exchanges_versions_do_not_overlap
        exclude using gist (catalog.version_box(exchange, valid_from, valid_until) with &&)
);

-- Every symbol version valid at `ts` (on a boundary the newer version: lower bound inclusive).
create or replace function catalog.symbols_as_of(ts timestamptz)
returns setof catalog.symbols language sql stable as $$
    select * from catalog.symbols
    where valid_from <= ts and (valid_until is null or valid_until > ts)
$$;

-- Bars know their instrument: a market asset may name its catalog symbol (EXCHANGE:SYMBOL).
alter table market.dim_assets add column if not exists catalog_symbol text;

-- The backtest join: each daily bar with the symbol version valid when its trading day opened, so no
-- metadata learned later (a tick-size change, a delisting) leaks into earlier bars.
create or replace view catalog.price_bars_1d_with_symbol as
select b.asset_id, a.symbol as asset_symbol, b.trade_date, b.open, b.high, b.low, b.close, b.volume,
       s.symbol, s.exchange, s.active, s.status, s.tick_size, s.pricescale, s.minmov, s.lot_size, s.min_qty,
       s.min_notional, s.contract_size, s.timezone, s.valid_from, s.valid_until
from market.price_bars_1d b
join market.dim_assets a using (asset_id)
left join catalog.symbols s
    on s.symbol = a.catalog_symbol
   and s.valid_from <= b.time_open_bar
   and (s.valid_until is null or s.valid_until > b.time_open_bar);

-- Well-known exchanges (a load names its exchange; unknown ones are refused). Effective since the epoch,
-- so any later statement about an exchange supersedes these.
insert into catalog.exchange_observations (exchange, effective_at, source, country, timezone, is_crypto, calendar, description)
select v.exchange, timestamptz '1970-01-01 00:00:00+00', 'defaults', v.country, v.timezone, v.is_crypto, v.calendar, v.description
from (values
    ('BINANCE', null, 'UTC', true, '24/7', 'Binance spot'),
    ('COINBASE', 'US', 'UTC', true, '24/7', 'Coinbase'),
    ('KRAKEN', null, 'UTC', true, '24/7', 'Kraken'),
    ('BYBIT', null, 'UTC', true, '24/7', 'Bybit'),
    ('NASDAQ', 'US', 'America/New_York', false, 'XNYS', 'Nasdaq Stock Market'),
    ('NYSE', 'US', 'America/New_York', false, 'XNYS', 'New York Stock Exchange'),
    ('AMEX', 'US', 'America/New_York', false, 'XNYS', 'NYSE American'),
    ('CME', 'US', 'America/Chicago', false, 'CMES', 'CME Globex'),
    ('CBOE', 'US', 'America/Chicago', false, 'XCBF', 'Cboe Futures Exchange'),
    ('LSE', 'GB', 'Europe/London', false, 'XLON', 'London Stock Exchange'),
    ('XETR', 'DE', 'Europe/Berlin', false, 'XETR', 'Xetra'),
    ('TSE', 'JP', 'Asia/Tokyo', false, 'XTKS', 'Tokyo Stock Exchange'),
    ('NSE', 'IN', 'Asia/Kolkata', false, 'XBOM', 'National Stock Exchange of India'),
    ('FX', null, 'UTC', false, null, 'Foreign exchange, 24/5'),
    ('OANDA', null, 'UTC', false, null, 'OANDA foreign exchange, 24/5')
) as v(exchange, country, timezone, is_crypto, calendar, description)
where not exists (select 1 from catalog.exchange_observations o where o.exchange = v.exchange and o.source = 'defaults');
