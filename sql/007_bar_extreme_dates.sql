-- The date on which each snapshot's running high and low were first reached (ties keep the earlier day):
-- the daily-data form of the original's time_high / time_low.
alter table market.price_bars_multi_tf add column if not exists high_date date, add column if not exists low_date date;
alter table market.price_bars_multi_tf_cal_iso add column if not exists high_date date, add column if not exists low_date date;
alter table market.price_bars_multi_tf_cal_us add column if not exists high_date date, add column if not exists low_date date;
alter table market.price_bars_multi_tf_cal_anchor_iso add column if not exists high_date date, add column if not exists low_date date;
alter table market.price_bars_multi_tf_cal_anchor_us add column if not exists high_date date, add column if not exists low_date date;

-- The union view gains the two columns at its end (create or replace keeps the earlier ones in place).
create or replace view market.price_bars_multi_tf_u as
select 'multi_tf'::text as alignment_source, asset_id, tf, bar_seq, trade_date, open, high, low, close, volume,
       tf_days, pos_in_bar, count_days, count_days_remaining, is_partial_start, is_partial_end,
       is_missing_days, count_missing_days, time_open_bar, time_close_bar, high_date, low_date
from market.price_bars_multi_tf
union all
select 'multi_tf_cal_iso', asset_id, tf, bar_seq, trade_date, open, high, low, close, volume, tf_days,
       pos_in_bar, count_days, count_days_remaining, is_partial_start, is_partial_end, is_missing_days,
       count_missing_days, time_open_bar, time_close_bar, high_date, low_date
from market.price_bars_multi_tf_cal_iso
union all
select 'multi_tf_cal_us', asset_id, tf, bar_seq, trade_date, open, high, low, close, volume, tf_days,
       pos_in_bar, count_days, count_days_remaining, is_partial_start, is_partial_end, is_missing_days,
       count_missing_days, time_open_bar, time_close_bar, high_date, low_date
from market.price_bars_multi_tf_cal_us
union all
select 'multi_tf_cal_anchor_iso', asset_id, tf, bar_seq, trade_date, open, high, low, close, volume, tf_days,
       pos_in_bar, count_days, count_days_remaining, is_partial_start, is_partial_end, is_missing_days,
       count_missing_days, time_open_bar, time_close_bar, high_date, low_date
from market.price_bars_multi_tf_cal_anchor_iso
union all
select 'multi_tf_cal_anchor_us', asset_id, tf, bar_seq, trade_date, open, high, low, close, volume, tf_days,
       pos_in_bar, count_days, count_days_remaining, is_partial_start, is_partial_end, is_missing_days,
       count_missing_days, time_open_bar, time_close_bar, high_date, low_date
from market.price_bars_multi_tf_cal_anchor_us;

-- Bars built before these columns existed are rebuilt from their first date by the next bar run (a migration
-- runs once; on a new database there is nothing to queue).
insert into market.bars_dirty (family, asset_id, dirty_from)
select f.family, b.asset_id, min(b.trade_date)
from market.price_bars_1d b
cross join (values ('multi_tf'), ('cal_iso'), ('cal_us'), ('cal_anchor_iso'), ('cal_anchor_us')) as f (family)
group by f.family, b.asset_id
on conflict (family, asset_id) do update set dirty_from = least(market.bars_dirty.dirty_from, excluded.dirty_from);
