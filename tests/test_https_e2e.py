"""HTTPS end to end: `axis-exporter certs`, `serve --certfile/--keyfile`, and the simulator as the camera."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from exporter.influxd_bridge import LocalInflux
from exporter.simulator import run_simulation
from tests.faultkit import (
    DROPPED_CONNECTION_WARNINGS,
    FaultPlan,
    assert_influx_matches_delivered,
    collect_dropped_connections,
    describe,
    fault_config,
    total_intervals,
)
from tests.serveprocess import ExporterFactory, ExporterProcess

# The fixture's readiness probe does not verify the receiver's certificate; the simulator below does.
pytestmark = [
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
    *DROPPED_CONNECTION_WARNINGS,
]
_collect = pytest.fixture(autouse=True)(collect_dropped_connections)

TOKEN = "camera-token-e2e"


def run_certs(out: Path, *hosts: str) -> None:
    """`axis-exporter certs --host ... --out OUT` as an installer would run it."""
    args = [arg for host in hosts for arg in ("--host", host)]
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "certs", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"axis-exporter certs failed:\n{result.stdout}\n{result.stderr}"
    for name in ("CA-cert.pem", "server-cert.pem", "server-key.pem"):
        assert (out / name).is_file(), f"axis-exporter certs did not write {name}"


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA and server certificate for the loopback receiver."""
    out = tmp_path_factory.mktemp("certs")
    run_certs(out, "127.0.0.1", "localhost")
    return out


def https_exporter(exporter_server: ExporterFactory, certs: Path) -> ExporterProcess:
    """The receiver on HTTPS with the generated certificate, device token bound to the fleet's serials."""
    serials = "|".join(sensor.serial for sensor in fault_config("http://x").sensors)
    return exporter_server(
        "--certfile",
        str(certs / "server-cert.pem"),
        "--keyfile",
        str(certs / "server-key.pem"),
        workers=2,
        scheme="https",
        env={"AXIS_EXPORTER_TOKENS": f"{TOKEN}:{serials}"},
    )


def test_https_delivery_with_the_generated_ca_and_a_restart(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str, certs_dir: Path
) -> None:
    """The simulator trusts only CA-cert.pem, as the camera does; a restart mid-run loses nothing."""
    server = https_exporter(exporter_server, certs_dir)
    assert server.url.startswith("https://")
    config = fault_config(server.url, cacert=certs_dir / "CA-cert.pem", token=TOKEN)
    plan = FaultPlan([], total_intervals(config))
    plan.steps = [(0.4, server.stop), (0.4, plan.later(1.0, server.start))]
    summary = run_simulation(config, on_progress=plan, progress_every=0.05)
    plan.assert_all_fired()
    assert all(sensor.test_connection == "200" for sensor in summary.sensors), describe(summary)
    assert "tls" not in summary.connection_errors, f"TLS failed with the right CA: {describe(summary)}"
    assert summary.connection_errors, f"the restart should have cut connections: {describe(summary)}"
    assert_influx_matches_delivered(influx, bucket, summary, config)


def everything_in(influx: LocalInflux, bucket: str) -> list[dict[str, object]]:
    """Every point of every measurement in the bucket."""
    return influx.query(bucket, "SELECT * FROM people_count, sensor_push")


@pytest.mark.parametrize("trust", ["another-ca", "system-store"])
def test_simulator_refuses_a_receiver_it_does_not_trust_and_nothing_is_stored(
    trust: str,
    exporter_server: ExporterFactory,
    influx: LocalInflux,
    bucket: str,
    certs_dir: Path,
    tmp_path: Path,
) -> None:
    """Another CA (or none: the system store) does not vouch for the receiver: TLS errors, nothing stored."""
    server = https_exporter(exporter_server, certs_dir)
    cacert = None
    if trust == "another-ca":
        run_certs(tmp_path / "other", "127.0.0.1", "localhost")
        cacert = tmp_path / "other" / "CA-cert.pem"
    config = fault_config(
        server.url, cacert=cacert, token=TOKEN, duration=dt.timedelta(minutes=15), drain=0.5, rate=None
    )
    summary = run_simulation(config)
    assert summary.delivered.intervals == 0 and not summary.complete, describe(summary)
    assert set(summary.connection_errors) == {"tls"}, f"expected only TLS failures: {describe(summary)}"
    assert summary.answers == {}, f"no request may get through: {describe(summary)}"
    assert all("certificate verify failed" in s.last_error for s in summary.sensors), describe(summary)
    assert everything_in(influx, bucket) == [], "a push over an untrusted connection was stored"


def test_certificate_for_another_host_is_refused(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str, tmp_path: Path
) -> None:
    """The camera checks the name: a certificate from the right CA but for another host is refused."""
    run_certs(tmp_path / "certs", "receiver.example.com")
    server = https_exporter(exporter_server, tmp_path / "certs")
    config = fault_config(
        server.url,
        cacert=tmp_path / "certs" / "CA-cert.pem",
        token=TOKEN,
        duration=dt.timedelta(minutes=15),
        drain=0.5,
        rate=None,
    )
    summary = run_simulation(config)
    assert set(summary.connection_errors) == {"tls"} and summary.delivered.intervals == 0, describe(summary)
    assert any("127.0.0.1" in s.last_error or "match" in s.last_error for s in summary.sensors), describe(
        summary
    )
    assert everything_in(influx, bucket) == [], "a push to a receiver with the wrong name was stored"


@pytest.mark.parametrize(
    ("version", "ciphers", "accepted"),
    [
        (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256", True),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-CHACHA20-POLY1305", True),
        (ssl.TLSVersion.TLSv1_3, None, True),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA:AES128-SHA:AES256-SHA256", False),  # CBC suites
        (ssl.TLSVersion.TLSv1_1, "DEFAULT@SECLEVEL=0", False),
    ],
    ids=["tls12-gcm", "tls12-chacha20", "tls13", "tls12-cbc", "tls11"],
)
def test_tls_is_1_2_or_later_with_aead_suites_only(
    exporter_server: ExporterFactory,
    certs_dir: Path,
    version: ssl.TLSVersion,
    ciphers: str | None,
    accepted: bool,
) -> None:
    server = https_exporter(exporter_server, certs_dir)
    context = ssl.create_default_context(cafile=str(certs_dir / "CA-cert.pem"))
    with warnings.catch_warnings():  # Python deprecates TLS 1.1 itself: exactly what is being refused
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
        ):
            handshake = tls.version(), tls.cipher()
    except (ssl.SSLError, ConnectionResetError) as exc:
        assert not accepted, f"{version.name} {ciphers} refused: {exc}"
        return
    assert accepted, f"{version.name} {ciphers} was accepted: {handshake}"
