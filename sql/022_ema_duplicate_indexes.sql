-- 008 created five packed EMA tables with `like market.ema_multi_tf_packed including all`, which copied the
-- canonical-row index under a generated name, and then created that index again under its own name: every
-- write to those tables maintained the same index twice. The copies are dropped; the named ones stay.
drop index if exists market.ema_multi_tf_cal_iso_packed_asset_id_tf_trade_date_idx;
drop index if exists market.ema_multi_tf_cal_us_packed_asset_id_tf_trade_date_idx;
drop index if exists market.ema_multi_tf_cal_anchor_iso_packed_asset_id_tf_trade_date_idx;
drop index if exists market.ema_multi_tf_cal_anchor_us_packed_asset_id_tf_trade_date_idx;
drop index if exists market.ema_multi_tf_v2_packed_asset_id_tf_trade_date_idx;
