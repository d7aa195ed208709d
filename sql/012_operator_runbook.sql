-- What the operators' runbook relies on: alerts grouped by the condition they report, and the refresh state
-- of every asset and family in one view.

alter table ops.alerts add column if not exists group_key text;
alter table ops.alerts drop constraint if exists alerts_status_check;
alter table ops.alerts add constraint alerts_status_check
    check (status in ('sent', 'failed', 'below_threshold', 'logged', 'grouped'));
create index if not exists alerts_group on ops.alerts (group_key, created_at) where group_key is not null;
comment on column ops.alerts.group_key is
    'the condition the alert reports; a repeat within TRADING_ASSETS_ALERT_QUIET_MINUTES is recorded as grouped';
