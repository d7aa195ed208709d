-- Series metadata (the energy/macro "core" slice): the golden dim_series, its derived mapping,
-- observations with their revision history, and the wide view built over them (003).
create schema if not exists core_energy;

create table if not exists core_energy.dim_series (
    model_col text primary key,
    series_code text not null unique,
    unit text not null default '',
    freq text not null,
    description text not null default '',
    tags text[] not null default '{}',
    updated_at timestamptz not null default now(),
    -- model_col becomes a column name of v_series_wide: a plain lower snake_case identifier that
    -- PostgreSQL does not truncate (63 bytes).
    constraint dim_series_model_col_format check (model_col ~ '^[a-z][a-z0-9_]*$' and octet_length(model_col) <= 63),
    constraint dim_series_freq_known check (freq in ('D', 'W', 'M', 'Q', 'A'))
);

create table if not exists core_energy.map_model_series (
    model_col text primary key,
    series_code text not null unique
);

-- Observations carry no foreign key to dim_series on purpose: dropping a series from the golden file
-- hides its column but never destroys its history. Loads validate series codes instead.
create table if not exists core_energy.fact_series_value (
    series_code text not null,
    obs_date date not null,
    value double precision not null,
    loaded_at timestamptz not null default now(),
    source_file text not null default '',
    primary key (series_code, obs_date)
);

create index if not exists fact_series_value_obs_date_idx on core_energy.fact_series_value (obs_date);

-- A revised observation moves its previous value here (the replaced loader kept the first write).
create table if not exists core_energy.fact_series_value_history (
    series_code text not null,
    obs_date date not null,
    value double precision not null,
    loaded_at timestamptz not null,
    source_file text not null default '',
    superseded_at timestamptz not null default now(),
    primary key (series_code, obs_date, superseded_at)
);
