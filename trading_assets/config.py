"""Settings from environment variables, read once into one typed object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"
SAMPLE_DATA_DIR = PROJECT_ROOT / "data" / "sample"


class ConfigError(ValueError):
    """A setting has a value the platform cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    lakehouse: Path
    landing: Path
    backup_dir: Path
    start_date: date
    series_config: Path
    market_staleness_hours: int
    # Symbol sources: a mirror of (or a recorded stand-in for) the ccxt exchanges' API and the TradingView scanner.
    ccxt_api_url: str | None = None
    tradingview_url: str = "https://scanner.tradingview.com"

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pg"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("TRADING_ASSETS_HOME") or ".trading_assets").expanduser().resolve()
        start_text = env.get("TRADING_ASSETS_START_DATE") or "1990-01-01"
        try:
            start_date = date.fromisoformat(start_text)
        except ValueError as exc:
            raise ConfigError(f"TRADING_ASSETS_START_DATE={start_text!r} is not an ISO date") from exc

        staleness_text = env.get("TRADING_ASSETS_MARKET_STALENESS_HOURS") or "48"
        if not staleness_text.isdigit() or int(staleness_text) < 1:
            raise ConfigError(
                f"TRADING_ASSETS_MARKET_STALENESS_HOURS={staleness_text!r} must be a positive whole number"
            )

        def path_setting(name: str, default: Path) -> Path:
            value = env.get(name)
            return Path(value).expanduser().resolve() if value else default

        return cls(
            home=home,
            database_url=env.get("TRADING_ASSETS_DATABASE_URL") or None,
            lakehouse=path_setting("TRADING_ASSETS_LAKEHOUSE", home / "lakehouse"),
            landing=path_setting("TRADING_ASSETS_LANDING", home / "landing"),
            backup_dir=path_setting("TRADING_ASSETS_BACKUP_DIR", home / "backups"),
            start_date=start_date,
            series_config=path_setting("TRADING_ASSETS_SERIES_CONFIG", PROJECT_ROOT / "config" / "dim_series.csv"),
            market_staleness_hours=int(staleness_text),
            ccxt_api_url=env.get("TRADING_ASSETS_CCXT_API_URL") or None,
            tradingview_url=env.get("TRADING_ASSETS_TRADINGVIEW_URL") or "https://scanner.tradingview.com",
        )
