-- trading: option-chain snapshots and the features of each snapshot, partitioned by day (retention drops days).

create table if not exists trading.option_chain_snapshots (
    trade_date date not null,
    ts timestamptz not null,
    exchange text not null,
    underlying text not null,
    expiry date not null,
    strike double precision not null check (strike > 0),
    option_type text not null check (option_type in ('C', 'P')),
    ltp double precision check (ltp >= 0),
    volume bigint check (volume >= 0),
    oi bigint check (oi >= 0),
    oi_change bigint,
    iv double precision check (iv >= 0),
    delta double precision,
    gamma double precision,
    vega double precision,
    theta double precision,
    rho double precision,
    bid double precision check (bid >= 0),
    ask double precision check (ask >= 0),
    bid_qty bigint,
    ask_qty bigint,
    spread double precision,
    underlying_price double precision,
    moneyness double precision,
    expires_at timestamptz not null,
    time_to_expiry_seconds bigint,
    source_file text not null,
    source_line integer not null,
    loaded_at timestamptz not null default now(),
    primary key (trade_date, ts, exchange, underlying, expiry, strike, option_type)
) partition by range (trade_date);
insert into trading.partitioning values ('option_chain_snapshots', 'day') on conflict do nothing;
comment on column trading.option_chain_snapshots.moneyness is 'underlying_price / strike';
comment on column trading.option_chain_snapshots.time_to_expiry_seconds is
    'expires_at (the expiry date at the exchange''s expiry time, in its time zone) minus ts';

create table if not exists trading.ml_features (
    trade_date date not null,
    ts timestamptz not null,
    exchange text not null,
    underlying text not null,
    underlying_price double precision,
    nearest_expiry date,
    time_to_expiry_hours double precision,
    pcr_oi double precision,
    pcr_volume double precision,
    pcr_itm_oi double precision,
    total_oi bigint,
    total_itm_oi_ce bigint,
    total_itm_oi_pe bigint,
    max_pain double precision,
    atm_iv double precision,
    iv_skew double precision,
    skew_method text,
    oi_change_pct_short double precision,
    oi_change_pct_long double precision,
    complete boolean not null,
    features jsonb not null,
    loaded_at timestamptz not null default now(),
    primary key (trade_date, ts, exchange, underlying)
) partition by range (trade_date);
insert into trading.partitioning values ('ml_features', 'day') on conflict do nothing;
comment on column trading.ml_features.features is 'every feature of the row as one JSON object';
