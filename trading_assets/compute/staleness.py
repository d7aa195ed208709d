"""When an asset's daily bars are stale: measured from the last session its calendar expected, so that a
weekend or a holiday never makes an exchange-listed asset stale, while a 24/7 asset counts wall-clock hours."""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from trading_assets.compute.calendars import EVERY_DAY, last_session_before


def expected_close(calendar: str, timezone: str, now: datetime) -> datetime:
    """When the last session `calendar` expected by `now` closed (bars close at the local midnight after
    their day); `now` itself for a 24/7 asset."""
    if calendar == EVERY_DAY:
        return now
    zone = ZoneInfo(timezone)
    session = last_session_before(calendar, now.astimezone(zone).date())
    if session is None:
        return now
    return datetime.combine(session + timedelta(days=1), time(), zone).astimezone(UTC)


def stale_assets(newest: pl.DataFrame, now: datetime, hours: float) -> list[int]:
    """Assets of `newest` (asset_id, calendar, timezone, newest_close) with no daily bar, or whose newest one
    closed more than `hours` before their calendar's last expected session closed."""
    limit = timedelta(hours=hours)
    expected: dict[tuple[str, str], datetime] = {}
    stale = []
    for asset_id, calendar, timezone, closed in newest.select(
        "asset_id", "calendar", "timezone", "newest_close"
    ).iter_rows():
        if (calendar, timezone) not in expected:
            expected[calendar, timezone] = expected_close(calendar, timezone, now)
        if closed is None or closed < expected[calendar, timezone] - limit:
            stale.append(asset_id)
    return sorted(stale)
