"""Deterministic, realistic people counts per sensor and minute: opening hours, daily curve, noise."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)

Direction = Literal["in", "out"]
OpeningHours = tuple[int, int] | None  # (open, close) in minutes after local midnight; None = closed

# Monday..Sunday. A shop: long weekdays, shorter Saturday, short Sunday.
DEFAULT_OPENING_HOURS: tuple[OpeningHours, ...] = (
    (9 * 60, 20 * 60),
    (9 * 60, 20 * 60),
    (9 * 60, 20 * 60),
    (9 * 60, 20 * 60),
    (9 * 60, 20 * 60),
    (10 * 60, 18 * 60),
    (11 * 60, 17 * 60),
)
DEFAULT_WEEKDAY_FACTORS = (0.85, 0.9, 0.95, 1.0, 1.15, 1.4, 0.8)
# Staff arrive in the 45 minutes before opening and leave in a 45-minute window after closing.
STAFF_WINDOW_MINUTES = 45
POISSON_EXACT_LIMIT = 30.0  # above this the normal approximation is indistinguishable and much faster


@dataclass(frozen=True, slots=True)
class DirectionCount:
    """One item of a measurement: people counted in one direction (adults only from the 3D counter)."""

    direction: Direction
    count: int
    adults: int | None = None


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """One one-minute measurement; items None is what a device sends for a minute without counting data."""

    start: dt.datetime
    items: tuple[DirectionCount, ...] | None

    @property
    def end(self) -> dt.datetime:
        """End of the minute (exclusive)."""
        return self.start + MINUTE


@dataclass(frozen=True)
class TrafficProfile:
    """Knobs of the traffic model; the defaults look like a mid-sized shop entrance."""

    peak_per_minute: float = 6.0
    dwell_minutes: int = 25
    staff_per_day: float = 6.0
    null_share: float = 0.25
    adult_share_weekday: float = 0.85
    adult_share_weekend: float = 0.7
    day_variation: float = 0.15
    opening_hours: tuple[OpeningHours, ...] = DEFAULT_OPENING_HOURS
    weekday_factors: tuple[float, ...] = DEFAULT_WEEKDAY_FACTORS

    def __post_init__(self) -> None:
        """Reject profiles the model cannot use."""
        if len(self.opening_hours) != 7 or len(self.weekday_factors) != 7:
            raise ValueError("opening_hours and weekday_factors need one entry per weekday (Monday first)")
        if self.peak_per_minute < 0 or not 0 <= self.null_share <= 1 or self.dwell_minutes < 0:
            raise ValueError("peak_per_minute and dwell_minutes must be >= 0, null_share within 0..1")


def _bump(minute_of_day: float, centre_hour: float, width_minutes: float) -> float:
    """Gaussian bump of height 1 around a time of day."""
    return math.exp(-0.5 * ((minute_of_day - centre_hour * 60) / width_minutes) ** 2)


def daily_curve(minute_of_day: float, weekday: int) -> float:
    """Relative arrival rate: lunch and after-work peaks on weekdays, one broad peak at weekends."""
    if weekday == 5:
        return 0.3 + 0.9 * _bump(minute_of_day, 14.0, 150)
    if weekday == 6:
        return 0.3 + 0.8 * _bump(minute_of_day, 14.5, 120)
    return 0.25 + 0.65 * _bump(minute_of_day, 12.5, 70) + 0.85 * _bump(minute_of_day, 17.5, 80)


def poisson(rng: random.Random, mean: float) -> int:
    """Poisson sample (Knuth for small means, rounded normal otherwise)."""
    if mean <= 0:
        return 0
    if mean > POISSON_EXACT_LIMIT:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def binomial(rng: random.Random, trials: int, share: float) -> int:
    """Binomial sample by counting successes (trials per minute are small)."""
    return sum(1 for _ in range(trials) if rng.random() < share)


@dataclass
class TrafficModel:
    """Counts as a pure function of (seed, serial, minute), so re-sends and re-runs give identical data."""

    seed: int = 0
    profile: TrafficProfile = field(default_factory=TrafficProfile)
    _day_factors: dict[dt.date, float] = field(default_factory=dict, repr=False)
    _sensor_scales: dict[str, float] = field(default_factory=dict, repr=False)

    def sensor_scale(self, serial: str) -> float:
        """How busy this entrance is compared with the profile's peak (0.5..1.5)."""
        scale = self._sensor_scales.get(serial)
        if scale is None:
            scale = random.Random(f"{self.seed}/scale/{serial}").uniform(0.5, 1.5)
            self._sensor_scales[serial] = scale
        return scale

    def day_factor(self, day: dt.date) -> float:
        """Site-wide variation of one day (weather, events), the same for every sensor."""
        factor = self._day_factors.get(day)
        if factor is None:
            rng = random.Random(f"{self.seed}/day/{day.isoformat()}")
            factor = rng.lognormvariate(0.0, self.profile.day_variation)
            self._day_factors[day] = factor
        return factor

    def customer_rate(self, local: dt.datetime, scale: float) -> float:
        """Expected customers entering per minute at a local time."""
        hours = self.profile.opening_hours[local.weekday()]
        if hours is None:
            return 0.0
        opening, closing = hours
        minute_of_day = local.hour * 60 + local.minute
        if not opening <= minute_of_day < closing:
            return 0.0
        ramp = min(1.0, 0.5 + (minute_of_day - opening) / 60)  # the first half hour is quieter
        wind_down = 0.5 if closing - minute_of_day <= 15 else 1.0
        return (
            self.profile.peak_per_minute
            * scale
            * self.day_factor(local.date())
            * self.profile.weekday_factors[local.weekday()]
            * daily_curve(minute_of_day, local.weekday())
            * ramp
            * wind_down
        )

    def staff_rates(self, local: dt.datetime) -> tuple[float, float]:
        """Expected staff (in, out) per minute: in before opening, the same number out after closing."""
        hours = self.profile.opening_hours[local.weekday()]
        if hours is None:
            return 0.0, 0.0
        opening, closing = hours
        minute_of_day = local.hour * 60 + local.minute
        rate = self.profile.staff_per_day / STAFF_WINDOW_MINUTES
        staff_in = rate if opening - STAFF_WINDOW_MINUTES <= minute_of_day < opening else 0.0
        leave_from = closing + self.profile.dwell_minutes
        staff_out = rate if leave_from <= minute_of_day < leave_from + STAFF_WINDOW_MINUTES else 0.0
        return staff_in, staff_out

    def hour_block(
        self, serial: str, time_zone: str, hour_start: dt.datetime, adults: bool
    ) -> list[MinuteCount]:
        """The 60 measurements of one UTC hour, drawn from one RNG so the block is reproducible."""
        zone = ZoneInfo(time_zone)
        scale = self.sensor_scale(serial)
        rng = random.Random(f"{self.seed}/{serial}/{int(hour_start.timestamp())}")
        dwell = dt.timedelta(minutes=self.profile.dwell_minutes)
        block: list[MinuteCount] = []
        for offset in range(60):
            start = hour_start + offset * MINUTE
            local = start.astimezone(zone)
            staff_in, staff_out = self.staff_rates(local)
            # People leave about one dwell time after they came, so in and out balance over a day.
            expected_in = self.customer_rate(local, scale) + staff_in
            expected_out = self.customer_rate((start - dwell).astimezone(zone), scale) + staff_out
            count_in, count_out = poisson(rng, expected_in), poisson(rng, expected_out)
            quiet = expected_in == 0 and expected_out == 0 and count_in == 0 and count_out == 0
            if quiet and rng.random() < self.profile.null_share:
                block.append(MinuteCount(start, None))
                continue
            if adults:
                weekend = local.weekday() >= 5
                share = self.profile.adult_share_weekend if weekend else self.profile.adult_share_weekday
                items: tuple[DirectionCount, ...] = (
                    DirectionCount("in", count_in, binomial(rng, count_in, share)),
                    DirectionCount("out", count_out, binomial(rng, count_out, share)),
                )
            else:
                items = (DirectionCount("in", count_in), DirectionCount("out", count_out))
            block.append(MinuteCount(start, items))
        return block


def floor_minute(moment: dt.datetime) -> dt.datetime:
    """Start of the minute containing `moment` (aware UTC)."""
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


def floor_hour(moment: dt.datetime) -> dt.datetime:
    """Start of the UTC hour containing `moment`."""
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def iter_minutes(
    model: TrafficModel,
    serial: str,
    time_zone: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    adults: bool,
    cache: dict[dt.datetime, list[MinuteCount]] | None = None,
    cache_blocks: int = 4,
) -> Iterator[MinuteCount]:
    """Measurements for every minute in [start, end), optionally reusing recently generated hour blocks."""
    start, end = floor_minute(start), floor_minute(end)
    hour = floor_hour(start)
    while hour < end:
        block = cache.get(hour) if cache is not None else None
        if block is None:
            block = model.hour_block(serial, time_zone, hour, adults)
            if cache is not None:
                while len(cache) >= cache_blocks:
                    del cache[next(iter(cache))]  # dicts keep insertion order: drop the oldest block
                cache[hour] = block
        for minute in block:
            if start <= minute.start < end:
                yield minute
        hour += HOUR
