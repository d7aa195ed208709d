"""trading_assets: the Dagster asset graph behind a trading system's data."""
