"""What the status page shows: every sensor's state, the recent pushes, the receiver, the camera settings.

The admin process builds one ``StatusReport`` per request from the shared runtime database (sensor
registry and push log, written by the workers), the dead-letter store, and two InfluxQL reads: today's
counts since each sensor's own local midnight, and the sensors that pushed in the last week (so that one
not seen since this start still has a row). InfluxDB being down costs those two reads, never the page.
Nothing here is a secret: device tokens appear as their number in AXIS_EXPORTER_TOKENS and the serials
they are bound to, never as their value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from exporter import __version__
from exporter.certs import CA_CERT_FILE, fingerprint_sha256, subject_alt_names
from exporter.config import Config
from exporter.deadletter import DeadLetterStore
from exporter.influxread import InfluxReader, InfluxReadError, quote_regex
from exporter.localday import resolve_zone
from exporter.pushlog import PushLog, PushRecord
from exporter.sensors import MAX_SEND_INTERVAL_SECONDS, SensorRegistry, SensorState, quiet_threshold
from exporter.sensorsfile import SensorsFile

# A push later than its interval by more than this is late; silence past quiet_threshold is "silent".
LATE_GRACE_SECONDS = 60
KNOWN_SENSORS_LOOKBACK = "7d"
# InfluxDB answers are kept this long, so that auto-refreshing pages do not query it every time.
INFLUX_CACHE_SECONDS = 10.0
RECENT_PUSHES_SHOWN = 200

STATES = ("receiving", "late", "silent", "not seen since start")


@dataclass(frozen=True)
class ListenerInfo:
    """How ``serve`` runs the push listener, passed to the admin process."""

    bind: str
    workers: int
    connections: int
    certfile: str | None
    started_at: float = field(default_factory=time.time)

    @property
    def scheme(self) -> str:
        """http or https."""
        return "https" if self.certfile else "http"


@dataclass(frozen=True)
class SensorRow:
    """One sensor on the page."""

    serial: str
    name: str
    site: str  # from the sensors file; "" when the file does not assign the serial
    zone: str
    reported_address: str
    source_address: str
    application: str
    application_version: str
    timezone: str
    push_interval_seconds: int | None
    last_push: float | None
    last_push_age_seconds: float | None
    last_push_local: str
    state: str
    today_in: int | None
    today_out: int | None
    last_status: int | None
    last_result: str
    last_message: str


@dataclass(frozen=True)
class ReceiverInfo:
    """The receiver itself."""

    version: str
    started_at: float
    uptime_seconds: float
    push_url: str
    workers: int
    connections: int
    tls: bool
    tls_hosts: list[str]
    ca_fingerprint_sha256: str
    influxdb_url: str
    influxdb_bucket: str
    influxdb_reachable: bool
    influxdb_message: str
    deadletter_entries: int
    deadletter_bytes: int
    deadletter_max_bytes: int


@dataclass(frozen=True)
class CameraSettings:
    """What to type into the camera's Push Reporting settings."""

    url: str
    token_hint: str
    ca_download: str  # path of the CA certificate on the admin listener, "" without one
    ca_fingerprint_sha256: str


@dataclass(frozen=True)
class StatusReport:
    """Everything the page shows; ``as_dict`` is ``/api/status``."""

    generated_at: float
    receiver: ReceiverInfo
    camera: CameraSettings
    sensors: list[SensorRow]
    recent_pushes: list[PushRecord]
    counts_message: str  # why today's counts or earlier sensors are missing, "" when they are not
    sensors_file: str  # its path, "" without one
    unassigned: list[str]  # serials with a row here that the sensors file does not assign

    def as_dict(self) -> dict[str, Any]:
        """For JSON."""
        return asdict(self)

    def state_counts(self) -> dict[str, int]:
        """How many sensors are in each state."""
        counts = dict.fromkeys(STATES, 0)
        for sensor in self.sensors:
            counts[sensor.state] += 1
        return counts


def sensor_state(age_seconds: float, push_interval: int | None) -> str:
    """receiving, late, or silent (past the missing-push alert's threshold)."""
    if age_seconds > quiet_threshold(push_interval):
        return "silent"
    if age_seconds > (push_interval or MAX_SEND_INTERVAL_SECONDS) + LATE_GRACE_SECONDS:
        return "late"
    return "receiving"


def local_midnight(timezone: str, now: float) -> tuple[float, str]:
    """Unix time of the last local midnight in ``timezone`` (UTC when unknown) and the zone used."""
    zone, name = resolve_zone(timezone)
    local = dt.datetime.fromtimestamp(now, zone)
    midnight = dt.datetime.combine(local.date(), dt.time(), tzinfo=zone)  # zoneinfo resolves DST days
    return midnight.timestamp(), name


def local_time(timestamp: float, timezone: str) -> str:
    """``timestamp`` as the sensor's wall-clock time, with its zone's abbreviation."""
    zone, _ = resolve_zone(timezone)
    return dt.datetime.fromtimestamp(timestamp, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


@dataclass
class _Cached:
    at: float = -1e9
    value: Any = None


class StatusSource:
    """Builds reports; one per admin process, shared by its request threads."""

    def __init__(
        self,
        config: Config,
        listener: ListenerInfo,
        *,
        sensors: SensorRegistry,
        push_log: PushLog,
        deadletter: DeadLetterStore,
        reader: InfluxReader | None,
        influx_reachable: Any,
        sensors_file: SensorsFile | None = None,
    ) -> None:
        self.config = config
        self.listener = listener
        self.sensors = sensors
        self.push_log = push_log
        self.deadletter = deadletter
        self.reader = reader
        self.influx_reachable = influx_reachable  # () -> bool, cached by the writer
        self.sensors_file = sensors_file
        self.tls = _TlsInfo.read(listener.certfile)
        self._lock = threading.Lock()
        self._known = _Cached()
        self._counts: dict[str, _Cached] = {}

    def report(self, now: float | None = None, host: str = "") -> StatusReport:
        """The report as of ``now``; ``host`` is how the client reached the admin listener (for the URL)."""
        now = time.time() if now is None else now
        states = {state.serial: state for state in self.sensors.sensors()}
        problems: list[str] = []
        known: dict[str, dict[str, Any]] = {}
        try:
            known = self._known_sensors(now)
        except InfluxReadError as exc:
            problems.append(str(exc))
        assigned = self.sensors_file.assigned() if self.sensors_file is not None else {}
        rows = self._rows(states, known, self.push_log.latest_answers(), assigned, now)
        counts: dict[str, tuple[int, int]] = {}
        try:
            counts = self._today_counts(rows, now)
        except InfluxReadError as exc:
            problems.append(str(exc))
        rows = [_with_counts(row, counts[row.serial]) if row.serial in counts else row for row in rows]
        reachable = bool(self.influx_reachable())
        influx = self.config.influx
        entries, used = self.deadletter.usage()
        push_url = self._push_url(host)
        receiver = ReceiverInfo(
            version=__version__,
            started_at=self.listener.started_at,
            uptime_seconds=max(0.0, now - self.listener.started_at),
            push_url=push_url,
            workers=self.listener.workers,
            connections=self.listener.connections,
            tls=self.listener.certfile is not None,
            tls_hosts=self.tls.hosts,
            ca_fingerprint_sha256=self.tls.ca_fingerprint,
            influxdb_url=influx.shown_url if influx else "",
            influxdb_bucket=influx.bucket if influx else "",
            influxdb_reachable=reachable,
            influxdb_message=""
            if reachable
            else "InfluxDB does not answer: pushes get 503 and the cameras re-send them later",
            deadletter_entries=entries,
            deadletter_bytes=used,
            deadletter_max_bytes=self.deadletter.max_bytes,
        )
        camera = CameraSettings(
            url=push_url,
            token_hint=self._token_hint(),
            ca_download="/ca.pem" if self.tls.ca_pem else "",
            ca_fingerprint_sha256=self.tls.ca_fingerprint,
        )
        return StatusReport(
            generated_at=now,
            receiver=receiver,
            camera=camera,
            sensors=rows,
            recent_pushes=self.push_log.recent(RECENT_PUSHES_SHOWN),
            counts_message="; ".join(dict.fromkeys(problems)),
            sensors_file=str(self.sensors_file.path or "") if self.sensors_file is not None else "",
            unassigned=sorted(row.serial for row in rows if not row.site) if self._has_file() else [],
        )

    def _has_file(self) -> bool:
        return self.sensors_file is not None and self.sensors_file.path is not None

    def ca_pem(self) -> bytes | None:
        """The CA certificate that signed the push listener's certificate, when ``certs`` made it."""
        return self.tls.ca_pem

    def _rows(
        self,
        states: dict[str, SensorState],
        known: dict[str, dict[str, Any]],
        answers: dict[str, PushRecord],
        assigned: Mapping[str, Mapping[str, str]],
        now: float,
    ) -> list[SensorRow]:
        rows = [_row(state, answers.get(state.serial), now) for state in states.values()]
        for serial, earlier in known.items():
            if serial not in states:
                rows.append(_unseen_row(serial, earlier, answers.get(serial), now))
        expected = {*self._bound_serials(), *assigned}  # a token or the sensors file names them
        for serial in sorted(expected):
            if serial not in states and serial not in known:
                rows.append(_unseen_row(serial, {}, answers.get(serial), now))
        rows = [
            dataclasses.replace(
                row, site=assigned[row.serial].get("site", ""), zone=assigned[row.serial].get("zone", "")
            )
            if row.serial in assigned
            else row
            for row in rows
        ]
        order = {state: index for index, state in enumerate(("silent", "late", "receiving"))}
        return sorted(rows, key=lambda row: (order.get(row.state, 3), row.name.lower(), row.serial))

    def _bound_serials(self) -> list[str]:
        return sorted({serial for token in self.config.device_tokens for serial in token.serials})

    def _known_sensors(self, now: float) -> dict[str, dict[str, Any]]:
        """Serials that pushed in the last week, with their label, zone and last push time."""
        if self.reader is None:
            return {}
        with self._lock:
            if now - self._known.at < INFLUX_CACHE_SECONDS:
                cached: dict[str, dict[str, Any]] = self._known.value
                return cached
        last, labels = self.reader.query(
            [
                f'SELECT last("intervals") FROM "sensor_push" WHERE time > now() - {KNOWN_SENSORS_LOOKBACK} '
                'GROUP BY "serial"',
                'SELECT last("sensor_label") AS "label", last("timezone") AS "timezone" FROM "sensor_push" '
                f'WHERE time > now() - {KNOWN_SENSORS_LOOKBACK} GROUP BY "serial"',
            ]
        )
        known: dict[str, dict[str, Any]] = {row["serial"]: {"last_push": row["time"]} for row in last}
        for row in labels:
            known.setdefault(row["serial"], {}).update(label=row.get("label"), timezone=row.get("timezone"))
        with self._lock:
            self._known = _Cached(now, known)
        return known

    def _today_counts(self, rows: Iterable[SensorRow], now: float) -> dict[str, tuple[int, int]]:
        """In and out since each sensor's local midnight, one statement per time zone."""
        if self.reader is None:
            return {}
        by_zone: dict[tuple[float, str], list[str]] = {}
        for row in rows:
            midnight, _ = local_midnight(row.timezone, now)
            by_zone.setdefault((midnight, row.timezone), []).append(row.serial)
        if not by_zone:
            return {}
        key = repr(sorted(by_zone.items()))
        with self._lock:
            cached = self._counts.get(key)
            if cached is not None and now - cached.at < INFLUX_CACHE_SECONDS:
                value: dict[str, tuple[int, int]] = cached.value
                return value
        zones = list(by_zone.items())
        tables = self.reader.query(
            [
                'SELECT sum("count") AS "count" FROM "people_count" '
                f"WHERE time >= {int(midnight)}s AND time <= {int(now) + 3600}s "
                f'AND "serial" =~ /^({"|".join(quote_regex(s) for s in serials)})$/ '
                'GROUP BY "serial", "direction"'
                for (midnight, _), serials in zones
            ]
        )
        counts: dict[str, tuple[int, int]] = {}
        for ((_, _), serials), table in zip(zones, tables, strict=True):
            totals = {serial: [0, 0] for serial in serials}
            for found in table:
                direction = 0 if found.get("direction") == "in" else 1
                totals.setdefault(found["serial"], [0, 0])[direction] += int(found.get("count") or 0)
            counts.update({serial: (pair[0], pair[1]) for serial, pair in totals.items()})
        with self._lock:
            self._counts = {key: _Cached(now, counts)}
        return counts

    def _push_url(self, host: str) -> str:
        """The URL cameras push to: AXIS_EXPORTER_PUBLIC_URL, else as well as it can be known from here."""
        if self.config.public_url:
            return self.config.public_url
        bind_host, _, port = self.listener.bind.rpartition(":")
        bind_host = bind_host.strip("[]")
        if self.tls.hosts:
            name = self.tls.hosts[0]  # the certificate's first name: the one the camera must use
        elif bind_host not in ("", "0.0.0.0", "::"):
            name = bind_host
        else:
            name = host.rpartition(":")[0].strip("[]") if ":" in host else host
            name = name or "THIS-HOST"
        name = f"[{name}]" if ":" in name else name
        return f"{self.listener.scheme}://{name}:{port}/push"

    def _token_hint(self) -> str:
        tokens = self.config.device_tokens
        if not tokens:
            return "none: AXIS_EXPORTER_TOKENS is not set, so any client may push (set tokens for production)"
        bound = sum(1 for token in tokens if token.serials)
        return (
            f"the camera's own token from AXIS_EXPORTER_TOKENS ({len(tokens)} configured, {bound} bound to "
            "serials), entered as the push settings' API token (sent as 'Authorization: Bearer <token>')"
        )


@dataclass(frozen=True)
class _TlsInfo:
    hosts: list[str]
    ca_fingerprint: str
    ca_pem: bytes | None

    @classmethod
    def read(cls, certfile: str | None) -> _TlsInfo:
        """The certificate's names, and the CA beside it if that signed it (``certs`` puts it there)."""
        if not certfile:
            return cls([], "", None)
        try:
            cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
        except (OSError, ValueError):
            return cls([], "", None)
        hosts = subject_alt_names(cert)
        ca_path = Path(certfile).with_name(CA_CERT_FILE)
        try:
            ca_pem = ca_path.read_bytes()
            ca = x509.load_pem_x509_certificate(ca_pem)
            cert.verify_directly_issued_by(ca)
        except (OSError, ValueError, TypeError, InvalidSignature):
            return cls(hosts, "", None)
        return cls(hosts, fingerprint_sha256(ca), ca_pem)


def _row(state: SensorState, answer: PushRecord | None, now: float) -> SensorRow:
    age = max(0.0, now - state.last_push)
    return SensorRow(
        serial=state.serial,
        name=state.name,
        site="",
        zone="",
        reported_address=state.ip_address,
        source_address=state.source_address,
        application=state.application,
        application_version=state.application_version,
        timezone=state.timezone,
        push_interval_seconds=state.push_interval,
        last_push=state.last_push,
        last_push_age_seconds=age,
        last_push_local=local_time(state.last_push, state.timezone),
        state=sensor_state(age, state.push_interval),
        today_in=None,
        today_out=None,
        last_status=answer.status if answer else None,
        last_result=answer.result if answer else "",
        last_message=answer.message if answer else "",
    )


def _unseen_row(serial: str, earlier: dict[str, Any], answer: PushRecord | None, now: float) -> SensorRow:
    """A sensor bound to a token, or seen in InfluxDB within the last week, but not since this start."""
    label = str(earlier.get("label") or serial)
    name = label.removesuffix(f" ({serial})")
    timezone = str(earlier.get("timezone") or "")
    last_push = earlier.get("last_push")
    return SensorRow(
        serial=serial,
        name=name,
        site="",
        zone="",
        reported_address="",
        source_address="",
        application="",
        application_version="",
        timezone=timezone,
        push_interval_seconds=None,
        last_push=float(last_push) if last_push is not None else None,
        last_push_age_seconds=max(0.0, now - float(last_push)) if last_push is not None else None,
        last_push_local=local_time(float(last_push), timezone) if last_push is not None else "",
        state="not seen since start",
        today_in=None,
        today_out=None,
        last_status=answer.status if answer else None,
        last_result=answer.result if answer else "",
        last_message=answer.message if answer else "",
    )


def _with_counts(row: SensorRow, counts: tuple[int, int]) -> SensorRow:
    return dataclasses.replace(row, today_in=counts[0], today_out=counts[1])
