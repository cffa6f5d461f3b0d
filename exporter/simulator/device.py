"""An emulated Axis people counter: identity, V0_4 payloads, and its store of unacknowledged minutes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from exporter.sensorsfile import LABEL_KEYS
from exporter.simulator.traffic import MINUTE, MinuteCount, TrafficModel, floor_minute, iter_minutes

Flavour = Literal["2d", "3d"]

API_NAME = "Axis Retail Data"
API_VERSION = "0.4"
MEASUREMENT_KIND = "people-counts"
APPLICATION_NAMES: dict[Flavour, str] = {"2d": "AXIS People Counter", "3d": "AXIS 3D People Counter"}
# 10.5 is the version in Axis' integration guide sample; the 2D ACAP has its own numbering.
APPLICATION_VERSIONS: dict[Flavour, str] = {"2d": "2.3.6", "3d": "10.5"}
DEFAULT_TIME_ZONE = "Europe/Stockholm"
DEFAULT_SERIAL_PREFIX = "ACCC8E"  # an Axis MAC prefix; serials are the device's MAC address
DEFAULT_FIRST_IP = "192.168.1.101"
SERIAL_LENGTH = 12


@dataclass(frozen=True)
class SensorIdentity:
    """What a device reports in the payload's `sensor` block, and where it hangs.

    ``labels`` are what the receiver's sensors file gives the serial (site, zone, ...; the device itself
    never sends them), as (key, value) pairs in ``LABEL_KEYS`` order, so tests can sum per site.
    """

    name: str
    serial: str
    time_zone: str = DEFAULT_TIME_ZONE
    flavour: Flavour = "3d"
    ip_address: str = DEFAULT_FIRST_IP
    application_version: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Fail early on a time zone the device could not have, or a label the sensors file refuses."""
        check_time_zone(self.time_zone)
        unknown = [key for key, _ in self.labels if key not in LABEL_KEYS]
        if unknown:
            raise ValueError(f"unknown label(s) {', '.join(unknown)}; labels are {', '.join(LABEL_KEYS)}")

    @property
    def label_map(self) -> dict[str, str]:
        """The labels as a dict."""
        return dict(self.labels)

    @property
    def site(self) -> str | None:
        """The site this sensor belongs to (its ``site`` label), if any."""
        return self.label_map.get("site")

    @property
    def site_zone(self) -> str | None:
        """The ``zone`` label (an entrance or area of the site; ``zone`` is the device's time zone)."""
        return self.label_map.get("zone")

    @property
    def application(self) -> str:
        """Application name as the device reports it."""
        return APPLICATION_NAMES[self.flavour]

    @property
    def zone(self) -> ZoneInfo:
        """The sensor's time zone."""
        return ZoneInfo(self.time_zone)


def check_time_zone(name: str) -> str:
    """Return `name` if zoneinfo knows it, else raise ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Stockholm)") from exc
    return name


def make_identities(
    count: int,
    *,
    flavour: Flavour = "3d",
    time_zones: Sequence[str] = (DEFAULT_TIME_ZONE,),
    serial_prefix: str = DEFAULT_SERIAL_PREFIX,
    name_prefix: str | None = None,
    first_ip: str = DEFAULT_FIRST_IP,
) -> list[SensorIdentity]:
    """Identities for `count` sensors: serials PREFIX000001..., names like the device default or PREFIX1..."""
    if count < 1:
        raise ValueError("at least one sensor")
    if not time_zones:
        raise ValueError("at least one time zone")
    prefix = serial_prefix.upper()
    if not re.fullmatch(r"[0-9A-F]{0,10}", prefix):
        raise ValueError("serial prefix must be 0-10 hexadecimal digits (a serial is a 12-digit MAC)")
    digits = SERIAL_LENGTH - len(prefix)
    if count >= 16**digits:
        raise ValueError(f"serial prefix {prefix!r} leaves room for fewer than {count} serials")
    base_ip = ipaddress.IPv4Address(first_ip)
    identities = []
    for index in range(count):
        serial = f"{prefix}{index + 1:0{digits}X}"
        # The device's default name is "axis-" + serial in lower case (see the guide's sample).
        name = f"axis-{serial.lower()}" if name_prefix is None else f"{name_prefix}{index + 1}"
        identities.append(
            SensorIdentity(
                name=name,
                serial=serial,
                time_zone=check_time_zone(time_zones[index % len(time_zones)]),
                flavour=flavour,
                ip_address=str(base_ip + index),
            )
        )
    return identities


def utc_text(moment: dt.datetime) -> str:
    """UTC time the way the device writes it: 2021-04-13T09:19:00Z."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_text(moment: dt.datetime, zone: ZoneInfo) -> str:
    """Local wall-clock time without offset, as the device writes it: 2021-04-13T11:19:00."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")


def sensor_block(identity: SensorIdentity) -> dict[str, str]:
    """The payload's `sensor` object."""
    return {
        "application": identity.application,
        "applicationVersion": identity.application_version or APPLICATION_VERSIONS[identity.flavour],
        "timeZone": identity.time_zone,
        "name": identity.name,
        "serial": identity.serial,
        "ipAddress": identity.ip_address,
    }


def measurement_object(minute: MinuteCount, zone: ZoneInfo) -> dict[str, Any]:
    """One entry of `data.measurements`."""
    items: list[dict[str, Any]] | None = None
    if minute.items is not None:
        items = []
        for item in minute.items:
            entry: dict[str, Any] = {"direction": item.direction, "count": item.count}
            if item.adults is not None:
                entry["adults"] = item.adults
            items.append(entry)
    return {
        "kind": MEASUREMENT_KIND,
        "utcFrom": utc_text(minute.start),
        "utcTo": utc_text(minute.end),
        "localFrom": local_text(minute.start, zone),
        "localTo": local_text(minute.end, zone),
        "items": items,
    }


def _envelope(identity: SensorIdentity, sent_at: dt.datetime) -> dict[str, Any]:
    """Fields every push has, in the device's order."""
    return {
        "apiName": API_NAME,
        "apiVersion": API_VERSION,
        "utcSent": utc_text(sent_at),
        "localSent": local_text(sent_at, identity.zone),
    }


def connection_test_payload(identity: SensorIdentity, sent_at: dt.datetime) -> dict[str, Any]:
    """What the device sends for 'Test connection': everything but `data`."""
    return {**_envelope(identity, sent_at), "sensor": sensor_block(identity)}


def data_payload(
    identity: SensorIdentity, minutes: Sequence[MinuteCount], sent_at: dt.datetime
) -> dict[str, Any]:
    """A data push holding `minutes` (consecutive, oldest first) as one-minute measurements."""
    if not minutes:
        raise ValueError("a data push holds at least one measurement")
    zone = identity.zone
    return {
        **_envelope(identity, sent_at),
        "data": {
            "utcFrom": utc_text(minutes[0].start),
            "utcTo": utc_text(minutes[-1].end),
            "localFrom": local_text(minutes[0].start, zone),
            "localTo": local_text(minutes[-1].end, zone),
            "measurements": [measurement_object(minute, zone) for minute in minutes],
        },
        "sensor": sensor_block(identity),
    }


@dataclass
class Totals:
    """Sums over measurements: what a test compares with InfluxDB."""

    intervals: int = 0
    null_intervals: int = 0
    items: int = 0
    count_in: int = 0
    count_out: int = 0
    adults_in: int = 0
    adults_out: int = 0

    def add_minute(self, minute: MinuteCount) -> None:
        """Count one measurement."""
        self.intervals += 1
        if minute.items is None:
            self.null_intervals += 1
            return
        for item in minute.items:
            self.items += 1
            if item.direction == "in":
                self.count_in += item.count
                self.adults_in += item.adults or 0
            else:
                self.count_out += item.count
                self.adults_out += item.adults or 0

    def add(self, other: Totals) -> None:
        """Add another set of sums."""
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def of(cls, minutes: Iterable[MinuteCount]) -> Totals:
        """Sums over some measurements."""
        totals = cls()
        for minute in minutes:
            totals.add_minute(minute)
        return totals


def encode_data_push(
    identity: SensorIdentity, minutes: Iterable[MinuteCount], sent_at: dt.datetime
) -> tuple[bytes, Totals]:
    """JSON body of a data push and the sums it carries, built one measurement at a time (90-day pushes)."""
    zone = identity.zone
    totals = Totals()
    encoded: list[bytes] = []
    first: MinuteCount | None = None
    last: MinuteCount | None = None
    for minute in minutes:
        if first is None:
            first = minute
        last = minute
        totals.add_minute(minute)
        encoded.append(orjson.dumps(measurement_object(minute, zone)))
    if first is None or last is None:
        raise ValueError("a data push holds at least one measurement")
    head = orjson.dumps(_envelope(identity, sent_at))[:-1]
    span = orjson.dumps(
        {
            "utcFrom": utc_text(first.start),
            "utcTo": utc_text(last.end),
            "localFrom": local_text(first.start, zone),
            "localTo": local_text(last.end, zone),
        }
    )[:-1]
    body = b"".join(
        [
            head,
            b',"data":',
            span,
            b',"measurements":[',
            b",".join(encoded),
            b']},"sensor":',
            orjson.dumps(sensor_block(identity)),
            b"}",
        ]
    )
    return body, totals


class SimulatedSensor:
    """One counter's memory: every minute is counted and kept (and re-sent) until a 200 acknowledges it."""

    def __init__(self, identity: SensorIdentity, model: TrafficModel, *, keep_from: dt.datetime) -> None:
        """Start with nothing measured; minutes from `keep_from` on are the device's undelivered history."""
        self.identity = identity
        self.model = model
        self.pending_from = floor_minute(keep_from)
        self.measured_until = self.pending_from
        self.sent_until = self.pending_from
        self.delivered = Totals()
        self._blocks: dict[dt.datetime, list[MinuteCount]] = {}

    def minutes(self, start: dt.datetime, end: dt.datetime) -> Iterator[MinuteCount]:
        """This sensor's measurements for [start, end); the same every time they are asked for."""
        return iter_minutes(
            self.model,
            self.identity.serial,
            self.identity.time_zone,
            start,
            end,
            adults=self.identity.flavour == "3d",
            cache=self._blocks,
        )

    def measure_until(self, now: dt.datetime) -> None:
        """Close every minute that ended by `now`; it joins the undelivered data."""
        self.measured_until = max(self.measured_until, floor_minute(now))

    @property
    def pending_minutes(self) -> int:
        """Measured minutes no 200 has acknowledged yet."""
        return (self.measured_until - self.pending_from) // MINUTE

    def batch_end(self, max_minutes: int = 0) -> dt.datetime:
        """End of the next push: everything pending, or the oldest `max_minutes` of it."""
        if max_minutes > 0:
            return min(self.measured_until, self.pending_from + max_minutes * MINUTE)
        return self.measured_until

    def encode_batch(self, end: dt.datetime, sent_at: dt.datetime) -> tuple[bytes, Totals]:
        """Body of a push holding the pending minutes up to `end`; marks them as sent once."""
        body, totals = encode_data_push(self.identity, self.minutes(self.pending_from, end), sent_at)
        self.sent_until = max(self.sent_until, end)
        return body, totals

    def acknowledge(self, end: dt.datetime, totals: Totals) -> None:
        """A 200 arrived for the push ending at `end`: those minutes are delivered and forgotten."""
        if end <= self.pending_from:
            raise ValueError("acknowledging minutes that are not pending")
        self.pending_from = end
        self.delivered.add(totals)

    def pending_totals(self) -> Totals:
        """Sums over what is still undelivered."""
        return Totals.of(self.minutes(self.pending_from, self.measured_until))
