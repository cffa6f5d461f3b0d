"""Slow clients: connections that trickle bytes are cut off at their deadline, and cost others nothing.

Contract (AXIS_EXPORTER_CLIENT_TIMEOUT, seconds): a client that has not sent its whole request within the
timeout is answered 408 (JSON body) or its connection is closed; its TLS handshake and headers get at most
30 s of it. Here the timeout is 2 s; a normal push sent while the tricklers hang on gets through at once
(the event-driven workers hold a trickler in a greenlet, not a thread: tests/test_abuse.py opens a hundred).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from exporter.certs import issue_certificates
from exporter.influxd_bridge import LocalInflux
from tests.faultkit import DROPPED_CONNECTION_WARNINGS, collect_dropped_connections
from tests.serveprocess import ExporterFactory, ExporterProcess
from tests.support import payload

# A push that times out leaves its socket to the garbage collector (see tests/faultkit.py).
pytestmark = DROPPED_CONNECTION_WARNINGS
_collect = pytest.fixture(autouse=True)(collect_dropped_connections)

CLIENT_TIMEOUT = 2
TRICKLERS = 2
TRICKLE_EVERY = 0.2  # seconds between single bytes
TRICKLE_FOR = 20.0  # bounded: a trickler gives up by itself after this long
CUT_WITHIN = 5.0  # the contract: cut off within ~5 s with a 2 s timeout


@dataclass
class Outcome:
    """How a trickling connection ended."""

    how: str = "still open"  # "answered", "closed" or "still open" (gave up after TRICKLE_FOR)
    seconds: float = 0.0
    answer: bytes = b""

    @property
    def status(self) -> int | None:
        """HTTP status of the answer, if any."""
        parts = self.answer.split(b"\r\n", 1)[0].split()
        return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else None


def trickle(connect: socket.socket, head: bytes, drip: bytes, outcome: Outcome) -> None:
    """Send `head` at once, then `drip` one byte at a time until the server answers or hangs up."""
    started = time.monotonic()
    with connect as sock:
        try:
            sock.sendall(head)
            index = 0
            while time.monotonic() - started < TRICKLE_FOR:
                readable, _, _ = select.select([sock], [], [], TRICKLE_EVERY)
                if readable:
                    chunk = sock.recv(65536)
                    outcome.seconds = time.monotonic() - started
                    if not chunk:
                        outcome.how = "answered" if outcome.answer else "closed"
                        return
                    outcome.answer += chunk
                    outcome.how = "answered"
                    if b"\r\n\r\n" in outcome.answer and outcome.answer.rstrip().endswith(b"}"):
                        return
                    continue
                sock.sendall(drip[index % len(drip) : index % len(drip) + 1])
                index += 1
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            outcome.how = "closed"
            outcome.seconds = time.monotonic() - started
        except TimeoutError:
            outcome.how = "still open"


def body_trickler_head() -> bytes:
    """Headers announcing a 100 kB push; the body then comes a byte at a time."""
    return (
        b"POST /push HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )


def start_tricklers(
    server: ExporterProcess, head: bytes, drip: bytes, count: int, context: ssl.SSLContext | None
) -> tuple[list[Outcome], list[threading.Thread]]:
    """`count` trickling connections, each on its own thread."""
    outcomes, threads = [], []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=TRICKLE_FOR + 5)
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context is not None else raw
        outcome = Outcome()
        thread = threading.Thread(target=trickle, args=(sock, head, drip, outcome), daemon=True)
        thread.start()
        outcomes.append(outcome)
        threads.append(thread)
    return outcomes, threads


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates for an HTTPS receiver on 127.0.0.1."""
    out = tmp_path_factory.mktemp("tls")
    issue_certificates(out, ["127.0.0.1"])
    return out


def slow_server(exporter_server: ExporterFactory, scheme: str, tls: Path) -> ExporterProcess:
    """One worker with a CLIENT_TIMEOUT-second client timeout."""
    args = []
    if scheme == "https":
        args = ["--certfile", str(tls / "server-cert.pem"), "--keyfile", str(tls / "server-key.pem")]
    return exporter_server(
        *args,
        workers=1,
        scheme=scheme,
        env={"AXIS_EXPORTER_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)},
    )


def assert_cut_off(
    outcomes: list[Outcome], what: str, statuses: frozenset[int] = frozenset({408}), tls_alert: bool = False
) -> None:
    """Every trickler was answered (408, with JSON) or disconnected (maybe after a TLS alert) in time."""
    for index, outcome in enumerate(outcomes):
        assert outcome.how != "still open", (
            f"{what} #{index} was still connected after {TRICKLE_FOR:.0f} s of trickling: "
            f"AXIS_EXPORTER_CLIENT_TIMEOUT={CLIENT_TIMEOUT} did not cut it off"
        )
        assert outcome.seconds <= CUT_WITHIN, (
            f"{what} #{index} was cut off only after {outcome.seconds:.1f} s (timeout {CLIENT_TIMEOUT} s)"
        )
        if outcome.how == "answered" and not (tls_alert and outcome.answer.startswith(b"\x15\x03")):
            assert outcome.status in statuses, (
                f"{what} #{index} got {outcome.answer[:200]!r}, expected HTTP {sorted(statuses)}"
            )
            if outcome.status == 408:
                body = outcome.answer.partition(b"\r\n\r\n")[2]
                assert json.loads(body)["status"] == "error", f"{what} #{index}: 408 without the JSON body"


def push_meanwhile(server: ExporterProcess, verify: str | bool) -> tuple[str, float]:
    """A normal push while the tricklers hold every thread: ("HTTP <status>" or the error, seconds taken)."""
    started = time.monotonic()
    try:
        response = requests.post(
            f"{server.url}/push", json=payload("sample-3d-object-data"), timeout=15, verify=verify
        )
    except requests.RequestException as exc:
        return f"no answer within 15 s ({type(exc).__name__})", time.monotonic() - started
    return f"HTTP {response.status_code}", time.monotonic() - started


# The fixture's readiness probe does not verify the self-signed certificate; the tests below do.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_clients_trickling_their_body_are_cut_off_and_pushes_get_through(
    scheme: str, exporter_server: ExporterFactory, influx: LocalInflux, bucket: str, tls_files: Path
) -> None:
    server = slow_server(exporter_server, scheme, tls_files)
    workers = server.worker_pids()
    context = ssl.create_default_context(cafile=str(tls_files / "CA-cert.pem")) if scheme == "https" else None
    verify: str | bool = str(tls_files / "CA-cert.pem") if scheme == "https" else True
    outcomes, threads = start_tricklers(server, body_trickler_head(), b" ", TRICKLERS, context)
    time.sleep(0.5)  # the tricklers are under way
    status, seconds = push_meanwhile(server, verify)
    for thread in threads:
        thread.join(TRICKLE_FOR + 10)
    assert status == "HTTP 200", (
        f"the push made while slow clients trickled got {status}; the tricklers: {outcomes}"
    )
    assert seconds <= CUT_WITHIN, f"the push waited {seconds:.1f} s behind the slow clients"
    assert_cut_off(outcomes, f"{scheme} body trickler")
    stored = influx.query(bucket, "SELECT * FROM people_count")
    assert len(stored) == 6, f"only the normal push's 6 points may be stored, found {len(stored)}"
    assert server.worker_pids() == workers, "a worker was replaced while handling slow clients"


def test_clients_trickling_their_headers_are_cut_off_and_pushes_get_through(
    exporter_server: ExporterFactory, influx: LocalInflux, bucket: str, tls_files: Path
) -> None:
    """Slowloris: the request line and headers a byte at a time, never finished."""
    server = slow_server(exporter_server, "http", tls_files)
    head = b"POST /push HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    drip = b"X-Slow: " + b"a" * 60 + b"\r\n"
    outcomes, threads = start_tricklers(server, head, drip, TRICKLERS, None)
    time.sleep(0.5)
    status, seconds = push_meanwhile(server, True)
    for thread in threads:
        thread.join(TRICKLE_FOR + 10)
    assert status == "HTTP 200", (
        f"the push made while clients trickled headers got {status} after {seconds:.1f} s: the request "
        f"line and headers have no deadline (AXIS_EXPORTER_CLIENT_TIMEOUT covers only the body); "
        f"the tricklers: {outcomes}"
    )
    assert seconds <= CUT_WITHIN, f"the push waited {seconds:.1f} s behind clients trickling headers"
    assert_cut_off(outcomes, "header trickler", frozenset({400, 408, 431}))


def client_hello() -> bytes:
    """The first bytes a TLS client sends (its ClientHello), made with a memory BIO."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello.startswith(b"\x16\x03"), f"not a TLS handshake record: {hello[:8]!r}"
    return hello


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_clients_trickling_their_tls_handshake_are_cut_off_and_pushes_get_through(
    exporter_server: ExporterFactory, tls_files: Path
) -> None:
    """Slowloris before HTTP: the TLS ClientHello a byte at a time, never finished."""
    server = slow_server(exporter_server, "https", tls_files)
    hello = client_hello()
    outcomes, threads = start_tricklers(server, hello[:1], hello[1:], TRICKLERS, None)
    time.sleep(0.5)
    status, seconds = push_meanwhile(server, str(tls_files / "CA-cert.pem"))
    for thread in threads:
        thread.join(TRICKLE_FOR + 10)
    assert status == "HTTP 200", (
        f"the push made while clients trickled their TLS handshake got {status} after {seconds:.1f} s: "
        f"the handshake has no deadline; the tricklers: {outcomes}"
    )
    assert seconds <= CUT_WITHIN, f"the push waited {seconds:.1f} s behind clients trickling a handshake"
    assert_cut_off(outcomes, "TLS handshake trickler", frozenset({400, 408}), tls_alert=True)
