-- trading: bars of every resolution from minute files, partitioned by day, and how far each file was read.

create table if not exists trading.multi_resolution_bars (
    trade_date date not null,
    bar_start timestamptz not null,
    exchange text not null,
    symbol text not null,
    resolution text not null check (resolution in ('1min', '5min', '15min', '1h', '1D')),
    bar_end timestamptz not null check (bar_end > bar_start),
    in_session boolean not null,
    open double precision not null check (open > 0),
    high double precision not null,
    low double precision not null,
    close double precision not null check (close > 0),
    volume double precision not null check (volume >= 0),
    vwap double precision,
    trade_count bigint,
    oi bigint,
    oi_change bigint,
    source_file text,
    source_line integer,
    loaded_at timestamptz not null default now(),
    primary key (trade_date, exchange, symbol, resolution, bar_start)
) partition by range (trade_date);
insert into trading.partitioning values ('multi_resolution_bars', 'day') on conflict do nothing;
comment on column trading.multi_resolution_bars.in_session is
    'false for a minute outside its session (pre-open, after the close): kept, never part of another resolution';

-- The checkpoint of incremental ingestion, written in the transaction that stores what was read: a restart
-- resumes exactly here (no minute lost, none read twice).
create table if not exists trading.intraday_files (
    source_file text primary key,
    bytes_read bigint not null check (bytes_read >= 0),
    lines_read integer not null check (lines_read >= 0),
    read_at timestamptz not null default now()
);
