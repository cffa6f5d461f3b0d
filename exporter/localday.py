"""Where a counting interval falls in its sensor's own calendar: counting day, clock hour, weekday, week.

InfluxQL applies one ``tz()`` to a whole query, so a dashboard cannot fold the counts of sensors in
different zones by each one's local day or hour. The receiver knows each sensor's zone, so it stores,
with every count, where its interval starts in that zone's calendar (``people_count`` fields):

- ``day_end``: unix time at which the counting day ends, so "today" is ``day_end > now`` whatever the
  zone, and 23- and 25-hour days are whole; a counting day starts at the configured day start (00:00 by
  default; e.g. 04:00 for a venue open past midnight, whose 01:00 visitors belong to the evening before);
- ``hour``: the local clock hour (0-23), ``weekday``: the counting day's ISO weekday (1 Monday .. 7);
- ``week_end``: unix time at which the counting week (Monday to Sunday) ends.

A zone's offset is a whole number of quarter hours and changes only on quarter-hour boundaries, so all of
this is constant within a quarter hour of UTC: it is worked out once per quarter hour, not per interval.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

QUARTER_HOUR = 900
FALLBACK_ZONE = "UTC"
_CACHE_LIMIT = 20_000  # quarter hours of one push remembered: 200 days


def resolve_zone(name: str) -> tuple[ZoneInfo, str]:
    """The zone called ``name``, and its name; UTC when the sensor reports none or an unknown one."""
    if name:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(FALLBACK_ZONE), FALLBACK_ZONE


class LocalCalendar:
    """One sensor's calendar: field text for the intervals of one push, cached per quarter hour."""

    def __init__(self, timezone: str, day_start_minutes: int = 0) -> None:
        self.zone, self.zone_name = resolve_zone(timezone)
        self.day_start = dt.timedelta(minutes=day_start_minutes)
        self._start_time = dt.time(day_start_minutes // 60, day_start_minutes % 60)
        self._cache: dict[int, tuple[str, str]] = {}

    def place(self, utc_seconds: int) -> tuple[int, int, int, int]:
        """(day_end, hour, weekday, week_end) of the interval starting at ``utc_seconds``."""
        local = dt.datetime.fromtimestamp(utc_seconds, self.zone)
        day = (local - self.day_start).date()
        day_end = self._boundary(day + dt.timedelta(days=1))
        week_end = self._boundary(day + dt.timedelta(days=8 - day.isoweekday()))
        return day_end, local.hour, day.isoweekday(), week_end

    def _boundary(self, day: dt.date) -> int:
        """Unix time at which counting day ``day`` starts (a day start in a DST gap moves with the clock)."""
        return int(dt.datetime.combine(day, self._start_time, tzinfo=self.zone).timestamp())

    def fields(self, utc_seconds: int) -> tuple[str, str]:
        """The calendar fields around ``net`` (fields are sorted by key): ``day_end=..i,hour=..i,`` and
        ``,week_end=..i,weekday=..i``."""
        quarter = utc_seconds // QUARTER_HOUR
        found = self._cache.get(quarter)
        if found is None:
            day_end, hour, weekday, week_end = self.place(quarter * QUARTER_HOUR)
            found = (
                f"day_end={day_end}i,hour={hour}i,",
                f",week_end={week_end}i,weekday={weekday}i",
            )
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[quarter] = found
        return found
