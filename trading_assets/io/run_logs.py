"""The runbook's day logs: `refresh-YYYY-MM-DD.log` under the platform's home, one line per run event,
appended as the run goes (so `tail -f` follows it), and removed after their retention."""

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

LOG_RETENTION_DAYS = 30
_DAY_LOG = re.compile(r"^refresh-(\d{4}-\d{2}-\d{2})\.log$")


def day_log(logs_dir: Path, day: date) -> Path:
    return logs_dir / f"refresh-{day.isoformat()}.log"


def append_line(logs_dir: Path, level: str, text: str, now: datetime | None = None) -> Path:
    """Append one line to the day's log (opened per line: several processes may write it)."""
    now = now or datetime.now(UTC)
    path = day_log(logs_dir, now.date())
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(f"{now:%Y-%m-%dT%H:%M:%S}Z {level:<7} {text}\n")
    return path


def append_lines(logs_dir: Path, lines: list[str]) -> Path:
    """Append a block (a summary): lines that report a failure carry ERROR, as the runbook's grep expects."""
    path = logs_dir
    for line in lines:
        path = append_line(logs_dir, "ERROR" if "FAILED" in line or "ERROR" in line else "INFO", line)
    return path


def remove_old_logs(logs_dir: Path, today: date, keep_days: int = LOG_RETENTION_DAYS) -> list[Path]:
    """Delete the day logs older than `keep_days` days; returns them. Other files are never touched."""
    if not logs_dir.is_dir():
        return []
    removed = []
    for path in sorted(logs_dir.iterdir()):
        match = _DAY_LOG.match(path.name)
        if match and date.fromisoformat(match.group(1)) < today - timedelta(days=keep_days):
            path.unlink()
            removed.append(path)
    return removed
