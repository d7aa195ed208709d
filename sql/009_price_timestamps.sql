-- The source's own timestamp of a price row as an instant (UTC): Lean's "YYYYMMDD HH:MM" read in the
-- asset's timezone, an intraday-style or aware timestamp as given. NULL when the source gave a date only.
alter table market.price_histories add column if not exists ts timestamptz;
