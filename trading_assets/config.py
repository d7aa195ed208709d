"""Settings from environment variables, read once into one typed object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from trading_assets.compute.validation import DEFAULT_BOUNDS, PriceBounds

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"
SAMPLE_DATA_DIR = PROJECT_ROOT / "data" / "sample"


class ConfigError(ValueError):
    """A setting has a value the platform cannot use."""


# Alert severities, least to most severe.
SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")

# What the daily catalog refresh can read (as `trading-assets load symbols --source`).
CATALOG_SOURCE_KINDS = ("file", "binance", "ccxt", "tradingview")


def parse_catalog_sources(text: str) -> tuple[tuple[str, str], ...]:
    """`KIND=INPUT` entries separated by whitespace, e.g. `binance=https://api.binance.com/api/v3/exchangeInfo
    ccxt=kraken tradingview=america`, as (kind, input) pairs."""
    sources = []
    for number, entry in enumerate(text.split(), start=1):
        kind, _, value = entry.partition("=")
        kind = kind.strip().lower()
        # The entry itself is not echoed: a URL may carry a token.
        if kind not in CATALOG_SOURCE_KINDS or not value:
            raise ConfigError(
                f"TRADING_ASSETS_CATALOG_SOURCES entry {number} is not KIND=INPUT with KIND one of "
                f"{', '.join(CATALOG_SOURCE_KINDS)}"
            )
        if kind in ("file", "binance") and not value.lower().startswith(("http://", "https://")):
            value = str(Path(value).expanduser().resolve())  # runs may start in another folder
        sources.append((kind, value))
    return tuple(sources)


EXECUTORS = ("in_process", "multiprocess", "celery")
CELERY_BROKER_ENV = "TRADING_ASSETS_CELERY_BROKER"
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    home: Path
    # Secrets (a password in a URL, tokens) stay out of the repr, and so out of logs and tracebacks.
    database_url: str | None = field(repr=False)
    lakehouse: Path
    landing: Path
    backup_dir: Path
    start_date: date
    series_config: Path
    market_staleness_hours: int
    # Research datasets the platform builds from its own bars and EMAs (trading_assets/defs/stage1/datasets.py).
    stage1_datasets_config: Path = PROJECT_ROOT / "config" / "stage1_datasets.toml"
    # host:port of a QuestDB line-protocol listener the research datasets are also sent to (unset: not sent).
    questdb_ilp: str | None = None
    # Symbol sources: a mirror of (or a recorded stand-in for) the ccxt exchanges' API and the TradingView scanner.
    ccxt_api_url: str | None = None
    tradingview_url: str = "https://scanner.tradingview.com"
    # The daily catalog refresh (schedule `catalog_daily`, UTC cron) and the sources it reads, (kind, input) pairs.
    catalog_cron: str = "0 5 * * *"
    catalog_sources: tuple[tuple[str, str], ...] = ()
    # A listing not marked full retires absent symbols only when it covers this share of its exchange's active ones.
    catalog_min_listing_share: float = 0.5
    # Alerts: sent at or above the threshold (CRITICAL always) to Telegram and/or a webhook; always recorded.
    alert_min_severity: str = "ERROR"
    alert_url: str | None = field(default=None, repr=False)
    telegram_bot_token: str | None = field(default=None, repr=False)
    telegram_chat_id: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    # Dated dim_series backups older than this many days are removed (the newest is always kept).
    series_backup_days: int = 30
    # A repeat of the same condition within this many minutes is recorded as grouped, not sent again.
    alert_quiet_minutes: int = 360
    # Days of history per table before its partitions are archived and dropped (config/retention.toml).
    retention_config: Path = PROJECT_ROOT / "config" / "retention.toml"
    # Folders backed up beside the databases as tar archives with the same rotation: (name, path) pairs.
    backup_folders: tuple[tuple[str, Path], ...] = ()
    # Dagster runs (and their event logs) older than this many days are purged by a daily schedule.
    run_history_days: int = 90
    # How often the intraday sensor looks for minute files that grew (seconds).
    intraday_sensor_seconds: int = 30
    # What a plausible price row is, and the share of unusable rows that refuses a whole file.
    price_bounds: PriceBounds = DEFAULT_BOUNDS
    # Where a run's steps execute: in_process (one process), multiprocess (a process per step) or celery
    # (steps as tasks on the broker, run by `trading-assets worker` processes on any machine).
    executor: str = "in_process"
    # The Celery broker and result store (a URL may carry a password: kept out of the repr).
    celery_broker: str = field(default=DEFAULT_CELERY_BROKER, repr=False)

    @property
    def embedded_pgdata(self) -> Path:
        return self.home / "pg"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def archive_dir(self) -> Path:
        return self.home / "archive"

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

        severity = (env.get("TRADING_ASSETS_ALERT_MIN_SEVERITY") or "ERROR").upper()
        if severity not in SEVERITIES:
            raise ConfigError(f"TRADING_ASSETS_ALERT_MIN_SEVERITY={severity!r} is not one of {', '.join(SEVERITIES)}")

        quiet_text = env.get("TRADING_ASSETS_ALERT_QUIET_MINUTES") or "360"
        if not quiet_text.isdigit():
            raise ConfigError(f"TRADING_ASSETS_ALERT_QUIET_MINUTES={quiet_text!r} must be a whole number of minutes")

        backup_days_text = env.get("TRADING_ASSETS_SERIES_BACKUP_DAYS") or "30"
        if not backup_days_text.isdigit() or int(backup_days_text) < 1:
            raise ConfigError(
                f"TRADING_ASSETS_SERIES_BACKUP_DAYS={backup_days_text!r} must be a positive whole number of days"
            )

        intraday_text = env.get("TRADING_ASSETS_INTRADAY_SENSOR_SECONDS") or "30"
        if not intraday_text.isdigit() or int(intraday_text) < 1:
            raise ConfigError(
                f"TRADING_ASSETS_INTRADAY_SENSOR_SECONDS={intraday_text!r} must be a positive whole number of seconds"
            )

        backup_folders = []
        for entry in filter(None, (e.strip() for e in (env.get("TRADING_ASSETS_BACKUP_FOLDERS") or "").split(","))):
            name, sep, folder_text = entry.partition("=")
            if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name.strip()) or not folder_text.strip():
                raise ConfigError(
                    f"TRADING_ASSETS_BACKUP_FOLDERS entry {entry!r} must be name=path (name in lower snake_case)"
                )
            folder = Path(folder_text.strip()).expanduser().resolve()
            if not folder.is_dir():
                raise ConfigError(f"TRADING_ASSETS_BACKUP_FOLDERS: {folder} (for {name}) is not a folder")
            backup_folders.append((name.strip(), folder))

        history_text = env.get("TRADING_ASSETS_RUN_HISTORY_DAYS") or "90"
        if not history_text.isdigit() or int(history_text) < 1:
            raise ConfigError(
                f"TRADING_ASSETS_RUN_HISTORY_DAYS={history_text!r} must be a positive whole number of days"
            )

        share_text = (env.get("TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE") or "0.5").strip()
        try:
            min_listing_share = float(share_text)
        except ValueError:
            min_listing_share = -1.0
        if not 0.0 <= min_listing_share <= 1.0:
            raise ConfigError(
                f"TRADING_ASSETS_CATALOG_MIN_LISTING_SHARE={share_text!r} must be a number from 0 to 1 (a share)"
            )

        bounds = _price_bounds(env)

        executor = (env.get("TRADING_ASSETS_EXECUTOR") or "in_process").strip().lower()
        if executor not in EXECUTORS:
            raise ConfigError(f"TRADING_ASSETS_EXECUTOR={executor!r} is not one of {', '.join(EXECUTORS)}")

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
            questdb_ilp=env.get("TRADING_ASSETS_QUESTDB_ILP") or None,
            retention_config=path_setting("TRADING_ASSETS_RETENTION", PROJECT_ROOT / "config" / "retention.toml"),
            stage1_datasets_config=path_setting(
                "TRADING_ASSETS_STAGE1_DATASETS", PROJECT_ROOT / "config" / "stage1_datasets.toml"
            ),
            market_staleness_hours=int(staleness_text),
            series_backup_days=int(backup_days_text),
            ccxt_api_url=env.get("TRADING_ASSETS_CCXT_API_URL") or None,
            tradingview_url=env.get("TRADING_ASSETS_TRADINGVIEW_URL") or "https://scanner.tradingview.com",
            catalog_cron=(env.get("TRADING_ASSETS_CATALOG_CRON") or "0 5 * * *").strip(),
            catalog_sources=parse_catalog_sources(env.get("TRADING_ASSETS_CATALOG_SOURCES") or ""),
            catalog_min_listing_share=min_listing_share,
            alert_min_severity=severity,
            alert_url=env.get("TRADING_ASSETS_ALERT_URL") or None,
            telegram_bot_token=env.get("TELEGRAM_BOT_TOKEN") or None,
            telegram_chat_id=env.get("TELEGRAM_CHAT_ID") or None,
            telegram_api_url=env.get("TRADING_ASSETS_TELEGRAM_API_URL") or "https://api.telegram.org",
            alert_quiet_minutes=int(quiet_text),
            intraday_sensor_seconds=int(intraday_text),
            run_history_days=int(history_text),
            backup_folders=tuple(backup_folders),
            price_bounds=bounds,
            executor=executor,
            celery_broker=env.get(CELERY_BROKER_ENV) or DEFAULT_CELERY_BROKER,
        )


def _price_bounds(env: Mapping[str, str]) -> PriceBounds:
    earliest_text = env.get("TRADING_ASSETS_EARLIEST_PRICE_DATE") or "1900-01-01"
    try:
        earliest = date.fromisoformat(earliest_text)
    except ValueError as exc:
        raise ConfigError(f"TRADING_ASSETS_EARLIEST_PRICE_DATE={earliest_text!r} is not an ISO date") from exc
    if earliest.year < 1900:
        raise ConfigError(f"TRADING_ASSETS_EARLIEST_PRICE_DATE={earliest_text!r}: calendars start in 1900")

    def number(name: str, default: str, upper: float) -> float:
        text = env.get(name) or default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value <= upper:
            raise ConfigError(f"{name}={text!r} must be a number above 0 and at most {upper:g}")
        return value

    return PriceBounds(
        earliest=earliest,
        max_price=number("TRADING_ASSETS_MAX_PRICE", "1e9", 1e15),
        max_reject_share=number("TRADING_ASSETS_MAX_REJECT_SHARE", "0.05", 1.0),
    )
