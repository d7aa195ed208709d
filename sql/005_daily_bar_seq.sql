-- A daily bar's position in its asset's history is unique; incremental rebuilds look bars up by it.
create unique index if not exists price_bars_1d_asset_seq on market.price_bars_1d (asset_id, bar_seq);
