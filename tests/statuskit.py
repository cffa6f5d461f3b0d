"""A commissioning session for the status page's tests: real ``serve``, real InfluxDB, real traffic.

``commission`` starts a receiver over HTTPS (certificate from ``axis-exporter certs``' code) with device
tokens, then drives what an installer's first hour produces: three simulated cameras in three time zones
(``axis-exporter simulate``), two cameras with hand-made counts around their local midnight (so that
"today" has a known answer), a wrong token, a token bound to another serial, a malformed body, a body
over the size limit, a wrong content type, and one sensor whose last push is long past and one that is
overdue (written into the receiver's own state database with older times, as time passing would leave
it). The InfluxDB outage is left to the tests, which stop and restart the bridge of this session's own
InfluxDB.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests

from exporter.certs import IssuedFiles, issue_certificates
from exporter.processes import free_port, wait_until
from exporter.sensors import SensorPush, SensorRegistry
from exporter.statedb import DATABASE_FILE
from tests.influxfaults import FaultableInflux
from tests.serveprocess import ExporterProcess, clean_env
from tests.support import payload

SIMULATED = ["ACCC8E000001", "ACCC8E000002", "ACCC8E000003"]
SIMULATED_ZONES = ["Europe/Stockholm", "America/New_York", "Asia/Tokyo"]
# Hand-made counts around local midnight: (zone, serial, name).
MIDNIGHT_SENSORS = [
    ("Asia/Tokyo", "ACCC8E0000A1", "tokyo-entrance"),
    ("America/New_York", "ACCC8E0000A2", "nyc-lobby"),
]
# Per sensor: yesterday 23:59 local, today 00:00 and 00:01 local: in, out.
MIDNIGHT_COUNTS = [(100, 50), (7, 3), (5, 2)]
TODAY_IN, TODAY_OUT = 12, 5
SILENT_SERIAL, LATE_SERIAL = "ACCC8E0000B1", "ACCC8E0000B2"
NEVER_SEEN_SERIAL = "ACCC8E0000FF"  # bound to a token, never pushes
FLEET_TOKEN = "fleet-token-" + "f" * 24
OTHER_TOKEN = "other-token-" + "0" * 24
WRONG_TOKEN = "wrong-token-" + "9" * 24
MAX_BODY_BYTES = 256 * 1024
# The simulated cameras have sites; the two midnight cameras are not in the file (unassigned).
SITES = {
    SIMULATED[0]: ("Store 12 Berlin", "Main entrance"),
    SIMULATED[1]: ("New York 5th Ave", ""),
    SIMULATED[2]: ("Tokyo Ginza", "Lift"),
}
SENSORS_FILE = "sensors:\n" + "".join(
    f"  {serial}:\n    site: {site}\n" + (f"    zone: {zone}\n" if zone else "")
    for serial, (site, zone) in SITES.items()
)


@dataclass
class Commissioned:
    """The receiver after the commissioning traffic, and what was sent to it."""

    influx: FaultableInflux
    bucket: str
    server: ExporterProcess
    tls: IssuedFiles
    state_db: Path
    answers: dict[str, requests.Response] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL of the push listener (HTTPS)."""
        return self.server.url

    @property
    def admin_url(self) -> str:
        """Base URL of the admin listener: the status page."""
        return self.server.admin_url

    def status(self) -> dict[str, Any]:
        """``/api/status`` now."""
        response = requests.get(f"{self.admin_url}/api/status", timeout=30)
        assert response.status_code == 200, f"/api/status answered {response.status_code}: {response.text}"
        document: dict[str, Any] = response.json()
        return document


def post(
    url: str, body: bytes, token: str, ca: Path, content_type: str = "application/json"
) -> requests.Response:
    """POST ``body`` to the receiver at ``url`` with ``token``, trusting ``ca``."""
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    return requests.post(f"{url}/push", data=body, headers=headers, timeout=30, verify=str(ca))


def midnight_push(zone: str, serial: str, name: str, now: dt.datetime) -> dict[str, Any]:
    """A push of three one-minute intervals: 23:59 yesterday, 00:00 and 00:01 today, local time."""
    document = payload("sample-3d-object-data")
    midnight = dt.datetime.combine(now.astimezone(ZoneInfo(zone)).date(), dt.time(), tzinfo=ZoneInfo(zone))
    starts = [midnight - dt.timedelta(minutes=1), midnight, midnight + dt.timedelta(minutes=1)]
    measurements = []
    for start, (count_in, count_out) in zip(starts, MIDNIGHT_COUNTS, strict=True):
        utc = start.astimezone(dt.UTC)
        measurements.append(
            {
                "kind": "people-counts",
                "utcFrom": f"{utc:%Y-%m-%dT%H:%M:%SZ}",
                "utcTo": f"{utc + dt.timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}",
                "items": [
                    {"direction": "in", "count": count_in, "adults": count_in},
                    {"direction": "out", "count": count_out, "adults": count_out},
                ],
            }
        )
    document["sensor"].update(serial=serial, name=name, timeZone=zone)
    document["utcSent"] = f"{now.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
    document["data"]["measurements"] = measurements
    document["data"]["utcFrom"] = measurements[0]["utcFrom"]
    document["data"]["utcTo"] = measurements[-1]["utcTo"]
    return document


def commission(base: Path) -> Iterator[Commissioned]:
    """Start the receiver (own InfluxDB under ``base``), drive the session's traffic, yield, stop."""
    import orjson

    influx = FaultableInflux(base / "influxdb").start()
    bucket = f"status_{uuid.uuid4().hex[:8]}"
    influx.create_database(bucket)
    tls = issue_certificates(base / "tls", ["127.0.0.1"])
    runtime = base / "runtime"
    tokens = (
        f"{FLEET_TOKEN}:{'|'.join([*SIMULATED, *(s for _, s, _ in MIDNIGHT_SENSORS)])},"
        f"{OTHER_TOKEN}:{NEVER_SEEN_SERIAL}"
    )
    env = {
        **clean_env(),
        "INFLUXDB_V2_URL": influx.url,
        "INFLUXDB_V2_ORG": "-",
        "INFLUXDB_V2_TOKEN": influx.token,
        "INFLUXDB_V2_BUCKET": bucket,
        "AXIS_EXPORTER_TOKENS": tokens,
        "AXIS_EXPORTER_DEADLETTER_DIR": str(base / "deadletter"),
        "AXIS_EXPORTER_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "PROMETHEUS_MULTIPROC_DIR": str(runtime),
        "AXIS_EXPORTER_WORKERS": "2",
    }
    sensors_file = base / "sensors.yml"
    sensors_file.write_text(SENSORS_FILE, encoding="utf-8")
    server = ExporterProcess(
        env=env,
        args=[
            *("--certfile", str(tls.server_cert), "--keyfile", str(tls.server_key)),
            *("--sensors-file", str(sensors_file)),
        ],
        log_path=base / "serve.log",
        port=free_port(),
        admin_port=free_port(),
        scheme="https",
    )
    session = Commissioned(
        influx=influx,
        bucket=bucket,
        server=server,
        tls=tls,
        state_db=runtime / DATABASE_FILE,
        secrets=[FLEET_TOKEN, OTHER_TOKEN, WRONG_TOKEN, influx.token],
    )
    try:
        server.start()
        simulate = subprocess.run(
            [
                sys.executable, "-m", "exporter", "simulate", f"{session.url}", "--sensors", "3",
                "--interval", "5", "--fast", "--duration", "2h", "--token", FLEET_TOKEN,
                "--cacert", str(tls.ca_cert), "--quiet", "--drain", "0",
                *(arg for zone in SIMULATED_ZONES for arg in ("--timezone", zone)),
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert simulate.returncode == 0, f"simulate failed:\n{simulate.stdout}\n{simulate.stderr}"
        now = dt.datetime.now(dt.UTC)
        ca = tls.ca_cert
        for zone, serial, name in MIDNIGHT_SENSORS:
            answer = post(session.url, orjson.dumps(midnight_push(zone, serial, name, now)), FLEET_TOKEN, ca)
            assert answer.status_code == 200, f"midnight push of {serial}: {answer.status_code} {answer.text}"
        camera = orjson.dumps(midnight_push("Europe/Stockholm", SIMULATED[0], "axis-accc8e000001", now))
        session.answers = {
            "wrong_token": post(session.url, camera, WRONG_TOKEN, ca),
            "other_serial": post(session.url, camera, OTHER_TOKEN, ca),
            "malformed": post(session.url, b'{"sensor": {"serial": "ACCC8E000002"', FLEET_TOKEN, ca),
            "too_large": post(session.url, b"x" * (MAX_BODY_BYTES + 1), FLEET_TOKEN, ca),
            "content_type": post(session.url, camera, FLEET_TOKEN, ca, content_type="application/xml"),
        }
        _age_two_sensors(session.state_db, now.timestamp())
        _wait_for_the_push_log(session)
        yield session
    finally:
        server.stop()
        influx.close()


def _age_two_sensors(state_db: Path, now: float) -> None:
    """Two sensors that pushed every 5 minutes: one 20 min ago (past the 15 min threshold: silent), one
    7 min ago (more than a minute overdue, not yet silent: late)."""
    registry = SensorRegistry(state_db, max_sensors=2000)
    try:
        for serial, name, age in (
            (SILENT_SERIAL, "loading-dock", 20 * 60),
            (LATE_SERIAL, "side-door", 7 * 60),
        ):
            registry.record(
                SensorPush(
                    serial=serial,
                    name=name,
                    application="PeopleCounter",
                    application_version="3.2.1",
                    timezone="Europe/Stockholm",
                    ip_address="192.168.1.50",
                    source_address="127.0.0.1",
                    pushed_at=now - age,
                    intervals=5,
                    span=(int(now - age - 300), int(now - age)),
                )
            )
    finally:
        registry.close()


def _wait_for_the_push_log(session: Commissioned, timeout: float = 10.0) -> None:
    """Workers write their pushes to the shared log a fraction of a second after answering them."""
    wait_until(
        lambda: any(push["status"] == 415 for push in session.status()["recent_pushes"]),
        timeout,
        "the last push to reach the push log",
        interval=0.1,
    )
