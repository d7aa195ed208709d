-- Corporate actions and ticker history (Lean factor and map files), and the adjusted daily bars over them.
-- A security is named by its permanent ticker (Lean's file name, upper case: AAPL, GOOGL, AAA.1). Raw prices
-- and bars stay as loaded; adjustment happens when they are read.

-- Factor file rows: the cumulative factors that apply to the dates on or before factor_date and after the
-- previous row's (Lean ends each file with 2050-12-31, 1, 1). No range constraints on purpose: the loader
-- refuses bad files, and the checks of market/corporate_actions say when a SQL edit broke the rules.
create table if not exists market.corporate_actions (
    security text not null,
    factor_date date not null,
    price_factor double precision not null,
    split_factor double precision not null,
    reference_price double precision not null,
    source_file text not null,
    source_line integer not null,
    loaded_at timestamptz not null default now(),
    primary key (security, factor_date)
);

-- Which ticker (on which exchange) was the security's symbol on each date, valid_until included.
create table if not exists catalog.ticker_history (
    security text not null,
    valid_from date not null,
    valid_until date not null,
    ticker text not null,
    exchange text,
    source_file text not null,
    source_line integer not null,
    loaded_at timestamptz not null default now(),
    primary key (security, valid_from)
);
create index if not exists ticker_history_ticker on catalog.ticker_history (ticker, valid_from);

-- The factors that apply to `day` for `security_name`: those of its first factor row on or after the day
-- (1 and 1 after the last row, or without a factor file).
create or replace function market.factors_on(security_name text, day date)
returns table (price_factor double precision, split_factor double precision)
language sql stable as $$
    select coalesce(f.price_factor, 1), coalesce(f.split_factor, 1)
    from (select 1) one
    left join lateral (
        select c.price_factor, c.split_factor from market.corporate_actions c
        where c.security = security_name and c.factor_date >= day
        order by c.factor_date limit 1
    ) f on true
$$;

-- A security's daily bars across its ticker changes: on each date, the raw bars of the market asset named by
-- the ticker valid then, with the symbol (EXCHANGE:TICKER) of that date.
create or replace view market.security_bars_1d as
select t.security, b.trade_date, t.ticker,
       case when t.exchange is not null then t.exchange || ':' || t.ticker end as symbol,
       b.asset_id, b.bar_seq, b.open, b.high, b.low, b.close, b.volume, b.time_open_bar, b.time_close_bar
from catalog.ticker_history t
join market.dim_assets a on a.symbol = t.ticker
join market.price_bars_1d b on b.asset_id = a.asset_id and b.trade_date between t.valid_from and t.valid_until;

-- Adjusted daily bars, one row per security, adjustment and date: 'split' multiplies prices by the split
-- factor (and divides volume by it), 'total_return' also by the dividend (price) factor. Computed when read,
-- so a new factor file changes exactly the dates it covers and nothing has to be rebuilt.
create or replace view market.price_bars_1d_adjusted as
select s.security, x.adjustment, s.trade_date, s.ticker, s.symbol, s.asset_id,
       s.open * x.factor as open, s.high * x.factor as high, s.low * x.factor as low, s.close * x.factor as close,
       s.volume / f.split_factor as volume, x.factor, f.split_factor, f.price_factor, s.close as raw_close
from market.security_bars_1d s
cross join lateral market.factors_on(s.security, s.trade_date) f
cross join lateral (values ('split', f.split_factor), ('total_return', f.split_factor * f.price_factor))
    as x (adjustment, factor);


-- The backtest join across ticker changes: each security bar with the catalog version of the symbol valid on its
-- date, as of the bar's open (catalog.price_bars_1d_with_symbol does the same per market asset).
create or replace view catalog.security_bars_1d_with_symbol as
select b.security, b.trade_date, b.symbol, b.open, b.high, b.low, b.close, b.volume,
       s.exchange, s.active, s.status, s.tick_size, s.pricescale, s.minmov, s.lot_size, s.min_qty,
       s.min_notional, s.contract_size, s.timezone, s.valid_from, s.valid_until
from market.security_bars_1d b
left join catalog.symbols s
    on s.symbol = b.symbol
   and s.valid_from <= b.time_open_bar
   and (s.valid_until is null or s.valid_until > b.time_open_bar);
