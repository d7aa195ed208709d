-- What the operators' runbook relies on: alerts grouped by the condition they report, and the refresh state
-- of every asset and family in one view.

alter table ops.alerts add column if not exists group_key text;
alter table ops.alerts drop constraint if exists alerts_status_check;
alter table ops.alerts add constraint alerts_status_check
    check (status in ('sent', 'failed', 'below_threshold', 'logged', 'grouped'));
create index if not exists alerts_group on ops.alerts (group_key, created_at) where group_key is not null;
comment on column ops.alerts.group_key is
    'the condition the alert reports; a repeat within TRADING_ASSETS_ALERT_QUIET_MINUTES is recorded as grouped';

-- What each asset's last run of each family did, written in that run's transaction (a rolled-back run leaves
-- the previous state).
create table if not exists market.refresh_state (
    family text not null,
    asset_id integer not null references market.dim_assets (asset_id) on delete cascade,
    last_run_id text not null,
    last_run_at timestamptz not null,
    rows_last_written bigint not null check (rows_last_written >= 0),
    first_date_written date,
    last_date_written date,
    primary key (family, asset_id)
);

-- The runbook's "check state" and "stale data" queries in one place: per asset and family, the newest source
-- day, what the last run did, and the change still waiting (dirty_from).
create or replace view market.v_refresh_state as
select a.asset_id, a.symbol, a.calendar, f.family,
       src.last_source_date, daily.last_bar_date,
       s.last_run_id, s.last_run_at, s.rows_last_written, s.first_date_written, s.last_date_written,
       d.dirty_from
from market.dim_assets a
cross join (values ('1d'), ('multi_tf'), ('cal_iso'), ('cal_us'), ('cal_anchor_iso'), ('cal_anchor_us'),
                   ('ema_multi_tf'), ('ema_multi_tf_v2'), ('ema_multi_tf_cal_iso'), ('ema_multi_tf_cal_us'),
                   ('ema_multi_tf_cal_anchor_iso'), ('ema_multi_tf_cal_anchor_us')) as f (family)
left join lateral (select max(p.trade_date) as last_source_date
                   from market.price_histories p where p.asset_id = a.asset_id) src on true
left join lateral (select max(b.trade_date) as last_bar_date
                   from market.price_bars_1d b where b.asset_id = a.asset_id) daily on true
left join market.refresh_state s on s.family = f.family and s.asset_id = a.asset_id
left join market.bars_dirty d on d.family = f.family and d.asset_id = a.asset_id;
comment on view market.v_refresh_state is
    'refresh state per asset and family: newest source day and daily bar, the last run and what it wrote, '
    'and the change still queued (dirty_from)';
