"""Bad input: mutated and random pushes never get a 5xx other than 503, a rejected push stores nothing,
and garbage, oversized bodies, wrong methods and content types never take down a gunicorn worker.

Property tests run against the real app, writer and InfluxDB (Flask test client) and, fewer of them,
against real gunicorn. Hypothesis is derandomized and keeps no example database, so CI runs are stable.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.app import create_app
from exporter.config import DeviceToken
from exporter.influxd_bridge import LocalInflux
from tests.serveprocess import ExporterFactory, ExporterProcess
from tests.support import PAYLOADS, make_config, payload

GOLDEN_BODIES = {path.parent.name: path.read_bytes() for path in sorted(PAYLOADS.glob("*/push.json"))}


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


GOLDEN_DOCS = {name: doc for name, body in GOLDEN_BODIES.items() if (doc := _parse(body)) is not None}
SERIALS = frozenset(
    doc["sensor"]["serial"]
    for doc in GOLDEN_DOCS.values()
    if isinstance(doc, dict) and isinstance(doc.get("sensor"), dict) and "serial" in doc["sensor"]
)
GOOD_TOKEN = "fuzz-token-for-golden-serials"
OTHER_TOKEN = "fuzz-token-for-another-serial"
TOKENS = (DeviceToken(GOOD_TOKEN, SERIALS), DeviceToken(OTHER_TOKEN, frozenset({"B8A44FFFFFFF"})))
TOKENS_ENV = f"{GOOD_TOKEN}:{'|'.join(sorted(SERIALS))},{OTHER_TOKEN}:B8A44FFFFFFF"

FUZZ_SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies -----------------------------------------------------------------------------------------

TRICKY_STRINGS = [
    "",
    "in",
    "out",
    "IN",
    "sideways",
    "people-counts",
    "2021-04-13T09:19:00Z",
    "2021-04-13T09:19:00+02:00",
    "2021-04-13T09:19:00",
    "2021-02-30T25:61:00Z",
    "1677-09-21T00:12:43Z",
    "2262-04-11T23:47:17Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "ACCC8EF3D92E",
    "B8A44F000001",
    "Europe/Stockholm",
    "Not/AZone",
    "a,b=c d\\",
    'quote"s',
    "new\nline",
    "\x00",
    "\ud800",
    "é" * 40,
    "x" * 5000,
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(TRICKY_STRINGS),
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)

Path_ = tuple[str | int, ...]


def paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every location in a JSON document (the root included)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


def mutate(doc: Any, path: Path_, operation: str, new: Any) -> Any:
    """A copy of `doc` with the value at `path` replaced, deleted, duplicated or wrapped in a list."""
    doc = copy.deepcopy(doc)
    if not path:
        return new
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if operation == "replace":
        parent[last] = new
    elif operation == "delete":
        del parent[last]
    elif operation == "wrap":
        parent[last] = [parent[last]]
    elif operation == "duplicate" and isinstance(parent, list) and isinstance(last, int):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif operation == "duplicate" and isinstance(parent, dict):
        parent[str(last).upper()] = parent[last]  # a look-alike key next to the real one
    return doc


@st.composite
def mutated_golden(draw: st.DrawFn) -> bytes:
    """A golden payload, maybe for another serial, with 0-3 structural mutations, serialised variously."""
    name = draw(st.sampled_from(sorted(GOLDEN_DOCS)))
    doc = GOLDEN_DOCS[name]
    if isinstance(doc, dict) and isinstance(doc.get("sensor"), dict) and draw(st.booleans()):
        # Another device's serial (or a look-alike): what a leaked token would be used for.
        serial = draw(st.sampled_from([*sorted(SERIALS), "B8A44FFFFFFF", "accc8ef3d92e", " ACCC8EF3D92E"]))
        doc = mutate(doc, ("sensor", "serial"), "replace", serial)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(paths(doc))))
        operation = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "duplicate"]))
        doc = mutate(doc, path, operation, draw(JSON_VALUES))
    ascii_only = draw(st.booleans())
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def mangled_bytes(draw: st.DrawFn) -> bytes:
    """A golden body truncated, with bytes inserted, or bytes overwritten."""
    body = GOLDEN_BODIES[draw(st.sampled_from(sorted(GOLDEN_BODIES)))]
    position = draw(st.integers(0, len(body)))
    operation = draw(st.sampled_from(["truncate", "insert", "overwrite"]))
    if operation == "truncate":
        return body[:position]
    chunk = draw(st.binary(min_size=1, max_size=16))
    if operation == "insert":
        return body[:position] + chunk + body[position:]
    return body[:position] + chunk + body[position + len(chunk) :]


BODIES = st.one_of(
    mutated_golden(),
    mutated_golden(),
    mangled_bytes(),
    JSON_VALUES.map(lambda value: json.dumps(value).encode("utf-8", "surrogatepass")),
    st.binary(max_size=2000),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/vnd.axis+json",
        "APPLICATION/JSON",
        None,
        "",
        "application/xml",
        "text/html",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "gar/bage;;;=",
    ]
)
AUTHORIZATIONS = st.sampled_from(
    [
        f"Bearer {GOOD_TOKEN}",
        f"Bearer {GOOD_TOKEN}",
        f"Bearer {GOOD_TOKEN}",
        f"bearer   {GOOD_TOKEN} ",
        f"Bearer {OTHER_TOKEN}",
        f"Bearer {OTHER_TOKEN}",
        "Bearer wrong",
        f"Basic {GOOD_TOKEN}",
        "Bearer",
        None,
    ]
)


@dataclass(frozen=True)
class FuzzRequest:
    """One abusive push."""

    path: str
    body: bytes
    content_type: str | None
    authorization: str | None

    def headers(self) -> dict[str, str]:
        """Request headers (absent ones left out)."""
        headers = {}
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers

    def __repr__(self) -> str:
        """Short enough to read in a failure message."""
        return (
            f"FuzzRequest(path={self.path!r}, content_type={self.content_type!r}, "
            f"authorization={self.authorization!r}, body={self.body[:300]!r}"
            f"{'...' if len(self.body) > 300 else ''})"
        )


REQUESTS = st.builds(FuzzRequest, st.sampled_from(["/push", "/"]), BODIES, CONTENT_TYPES, AUTHORIZATIONS)


# --- checks ---------------------------------------------------------------------------------------------

Snapshot = frozenset[tuple[tuple[str, Any], ...]]


def snapshot(influx: LocalInflux, bucket: str) -> Snapshot:
    """Every point in the bucket, with all tags and fields, as a comparable set."""
    rows = influx.query(bucket, "SELECT * FROM people_count, sensor_push")
    return frozenset(tuple(sorted(row.items())) for row in rows)


def check_answer(request: FuzzRequest, status: int, body: bytes) -> None:
    """The contract for any answer: no 5xx but 503, a JSON body saying what happened."""
    assert status != 500 and (status < 500 or status == 503), f"{request!r} got HTTP {status}: {body[:500]!r}"
    try:
        answer = json.loads(body)
    except ValueError:
        raise AssertionError(f"{request!r} got HTTP {status} with a non-JSON body {body[:300]!r}") from None
    assert isinstance(answer, dict) and "status" in answer, f"{request!r}: answer without status: {answer!r}"
    if status == 200:
        assert answer["status"] in {"ok", "partial", "test_connection"}, f"{request!r}: 200 with {answer!r}"


class StoreWatch:
    """Remembers the bucket's points, so each rejected push can be shown to have stored nothing."""

    def __init__(self, influx: LocalInflux, bucket: str) -> None:
        """Start from the bucket's current points."""
        self.influx = influx
        self.bucket = bucket
        self.points = snapshot(influx, bucket)
        self.accepted = 0
        self.rejected = 0
        self.statuses: dict[int, int] = {}

    def refresh(self) -> None:
        """Take the bucket as it is now as the reference."""
        self.points = snapshot(self.influx, self.bucket)

    def after(self, request: FuzzRequest, status: int) -> None:
        """Check the bucket after an answer: unchanged unless the push was accepted."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        now = snapshot(self.influx, self.bucket)
        if status >= 400:
            self.rejected += 1
            added, removed = now - self.points, self.points - now
            assert not added and not removed, (
                f"{request!r} was rejected with HTTP {status} but the bucket changed: "
                f"{len(added)} point(s) added/changed (first {sorted(added, key=repr)[:2]}), "
                f"{len(removed)} replaced"
            )
        else:
            self.accepted += 1
        self.points = now


def pushed_serial(body: bytes) -> str:
    """The serial a push claims to come from, normalised as loosely as a receiver might ('' if none)."""
    document = _parse(body)
    sensor = document.get("sensor") if isinstance(document, dict) else None
    serial = sensor.get("serial") if isinstance(sensor, dict) else None
    return serial.strip().upper() if isinstance(serial, str) else ""


def post(client: FlaskClient, request: FuzzRequest) -> tuple[int, bytes]:
    """Send through the Flask test client."""
    response = client.post(request.path, data=request.body, headers=request.headers())
    return response.status_code, response.get_data()


def fuzz(send: Callable[[FuzzRequest], tuple[int, bytes]], watch: StoreWatch, max_examples: int) -> None:
    """Send generated requests, checking each answer and the bucket after it."""

    @settings(FUZZ_SETTINGS, max_examples=max_examples)
    @given(request=REQUESTS)
    def explore(request: FuzzRequest) -> None:
        try:
            status, body = send(request)
            check_answer(request, status, body)
        except BaseException:
            watch.refresh()  # hypothesis goes on after a failure: the next example starts from here
            raise
        watch.after(request, status)

    explore()


# --- property tests against the app ---------------------------------------------------------------------


def test_golden_payloads_are_valid_seeds(client: FlaskClient) -> None:
    """The fuzzer starts from payloads the receiver accepts (else it would only explore rejections)."""
    accepted = [
        name
        for name, doc in GOLDEN_DOCS.items()
        if client.post("/push", json=doc).status_code == 200 and not name.startswith("error-")
    ]
    assert len(accepted) >= 8, f"only {accepted} of the golden payloads were accepted"


def test_fuzzed_pushes_without_tokens(client: FlaskClient, influx: LocalInflux, bucket: str) -> None:
    """Mutated and random pushes, no device tokens configured: never a 500, rejected ones store nothing."""
    watch = StoreWatch(influx, bucket)
    fuzz(lambda request: post(client, request), watch, 200)
    assert {200, 400, 415} <= set(watch.statuses), f"the inputs reached only {watch.statuses}"
    assert watch.accepted >= 10 and watch.rejected >= 20, f"too one-sided to prove much: {watch.statuses}"


def test_fuzzed_pushes_with_serial_bound_tokens(influx: LocalInflux, bucket: str, tmp_path: Path) -> None:
    """As above with device tokens: a wrong token (401) or another serial's token (403) stores nothing."""
    client = create_app(make_config(influx, bucket, tmp_path, device_tokens=TOKENS)).test_client()
    watch = StoreWatch(influx, bucket)

    def send(request: FuzzRequest) -> tuple[int, bytes]:
        status, body = post(client, request)
        if status == 200:
            serial = pushed_serial(request.body)
            allowed = [t.token for t in TOKENS if t.allows(serial)]
            assert any(token in (request.authorization or "") for token in allowed), (
                f"{request!r} was accepted for serial {serial!r} without a token bound to it"
            )
        return status, body

    fuzz(send, watch, 200)
    assert {200, 400, 401, 403, 415} <= set(watch.statuses), f"the inputs reached only {watch.statuses}"
    assert watch.accepted >= 10 and watch.rejected >= 20, f"too one-sided to prove much: {watch.statuses}"


# --- real gunicorn --------------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, *, close_write: bool = True, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the receiver and return whatever it answers until it closes (or `timeout`)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if close_write:
                # The server may have answered and hung up already (an oversized request line): read on.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if not close_write and b"\r\n\r\n" in received:
                    head, _, rest = received.partition(b"\r\n\r\n")
                    length = _content_length(head)
                    if length is not None and len(rest) >= length:
                        break
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server hung up on garbage: acceptable, checked by the caller via the status
    return received


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def status_of(response: bytes) -> int | None:
    """HTTP status of a raw response, None if the server closed without answering."""
    if not response:
        return None
    line = response.split(b"\r\n", 1)[0].split()
    assert len(line) >= 2 and line[0].startswith(b"HTTP/"), f"not an HTTP response: {response[:200]!r}"
    return int(line[1])


def push_request(body: bytes, *, headers: dict[str, str], path: str = "/push", method: str = "POST") -> bytes:
    """A raw HTTP/1.1 request with Content-Length and Connection: close."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def garbage_cases() -> list[tuple[str, bytes]]:
    """Malformed HTTP and random bytes, each sent on its own connection."""
    sample = json.dumps(payload("sample-3d-object-data")).encode()
    auth = f"Authorization: Bearer {GOOD_TOKEN}\r\n".encode()
    cases = [
        ("nul and high bytes", b"\x00\xff\xfe" * 200 + b"\r\n\r\n"),
        ("tls client hello on plain http", bytes.fromhex("16030100a5010000a10303") + bytes(160)),
        ("no request line", b"\r\n\r\n\r\n"),
        ("bad method token", b"P(ST /push HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("http/0.9", b"GET /push\r\n\r\n"),
        ("unknown http version", b"POST /push HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
        ("very long url", b"POST /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("very long header", b"POST /push HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 20_000 + b"\r\n\r\n"),
        ("thousands of headers", b"POST /push HTTP/1.1\r\n" + b"X-A: b\r\n" * 5_000 + b"\r\n"),
        ("header without colon", b"POST /push HTTP/1.1\r\nHost x\r\n\r\n"),
        ("content-length not a number", b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"),
        ("negative content-length", b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}"),
        (
            "two different content-lengths",
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
        ),
        (
            "content-length and chunked",
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "bad chunk size",
            b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
        ),
        (
            "chunked body cut short",
            b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + auth + b"\r\n"
            b"ffff\r\n" + sample[:100],
        ),
        (
            "body shorter than content-length",
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + auth
            + f"Content-Length: {len(sample) + 500}\r\n\r\n".encode()
            + sample,
        ),
        (
            "pipelined garbage after a push",
            push_request(sample, headers={"Content-Length": str(len(sample))})
            + b"\x16\x03\x01garbage\r\n\r\n",
        ),
        ("headers only, then hang up", b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"),
    ]
    rng = random.Random(20211031)
    for index in range(25):
        cases.append((f"random bytes #{index}", rng.randbytes(rng.randint(1, 3000))))
        prefix = b"POST /push HTTP/1.1\r\nHost: x\r\n"
        cases.append((f"random after request line #{index}", prefix + rng.randbytes(rng.randint(1, 500))))
    # With the right token a request gets past authentication to the body read, where cut-short and
    # malformed bodies surface.
    host = b"Host: x\r\n"
    return [(name, data if auth in data else data.replace(host, host + auth, 1)) for name, data in cases]


def assert_workers_intact(server: ExporterProcess, before: list[int]) -> None:
    """Same workers as before the abuse, and the receiver still stores a normal push."""
    assert server.process is not None and server.process.poll() is None, "the gunicorn master died"
    assert sorted(server.worker_pids()) == before, (
        f"workers changed from {before} to {sorted(server.worker_pids())}: one died.\n{server.log()[-3000:]}"
    )
    response = requests.post(
        f"{server.url}/push",
        json=payload("sample-3d-object-data"),
        headers={"Authorization": f"Bearer {GOOD_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, f"a normal push after the abuse got {response.status_code}"
    log = server.log()
    assert "Traceback" not in log and "unexpected error" not in log, (
        f"the receiver logged a crash:\n{log[-3000:]}"
    )


@pytest.fixture
def abused(exporter_server: ExporterFactory) -> ExporterProcess:
    """A receiver with a small body limit and device tokens, as a target for abuse."""
    return exporter_server(
        workers=2, env={"AXIS_EXPORTER_MAX_BODY_BYTES": "100000", "AXIS_EXPORTER_TOKENS": TOKENS_ENV}
    )


def test_oversized_wrong_methods_and_content_types_over_gunicorn(
    abused: ExporterProcess, influx: LocalInflux, bucket: str
) -> None:
    """413 for bodies over the limit (announced or not), 405 for other methods, 415 for other types."""
    server = abused
    before = sorted(server.worker_pids())
    auth = {"Authorization": f"Bearer {GOOD_TOKEN}"}
    # Announced as 50 MB, nothing sent: answered from the header alone, the body is never waited for.
    started = time.monotonic()
    answer = raw_exchange(
        server.port,
        push_request(b"", headers={**auth, "Content-Type": "application/json", "Content-Length": "50000000"}),
        close_write=False,
    )
    assert status_of(answer) == 413, f"an announced 50 MB body got {answer[:300]!r}"
    assert time.monotonic() - started < 5, "the 413 waited for a body that never came"
    assert b"AXIS_EXPORTER_MAX_BODY_BYTES" in answer, "the 413 should name the setting to raise"
    big = b'{"pad":"' + b"x" * 200_000 + b'"}'
    response = requests.post(
        f"{server.url}/push", data=big, headers={**auth, "Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 413, f"a 200 kB body over a 100 kB limit got {response.status_code}"
    methods = {"/push": ("GET", "PUT", "DELETE", "PATCH"), "/": ("PUT", "DELETE", "PATCH")}  # GET / lands
    for path, others in methods.items():
        for method in others:
            response = requests.request(method, f"{server.url}{path}", data=b"{}", headers=auth, timeout=10)
            assert response.status_code == 405, f"{method} {path} got {response.status_code}"
            assert response.json()["status"] == "error", f"{method} {path}: answer is not the JSON error"
    sample = json.dumps(payload("sample-3d-object-data")).encode()
    for content_type in ("application/xml", "text/html", "multipart/form-data; boundary=x", "image/png"):
        response = requests.post(
            f"{server.url}/push", data=sample, headers={**auth, "Content-Type": content_type}, timeout=10
        )
        assert response.status_code == 415, f"Content-Type {content_type} got {response.status_code}"
    assert influx.query(bucket, "SELECT * FROM people_count") == [], "a rejected push was stored"
    assert_workers_intact(server, before)


def test_garbage_never_gets_a_500_or_kills_a_worker(abused: ExporterProcess) -> None:
    """Malformed HTTP, random bytes and hang-ups: answered 4xx or closed, never 5xx; workers survive."""
    server = abused
    before = sorted(server.worker_pids())
    answers = {name: status_of(raw_exchange(server.port, data, timeout=10)) for name, data in garbage_cases()}
    assert sum(status is not None for status in answers.values()) > 10, f"hardly any answers: {answers}"
    assert sorted(server.worker_pids()) == before, (
        f"workers changed from {before} to {sorted(server.worker_pids())}: one died.\n{server.log()[-3000:]}"
    )
    server_errors = {name: status for name, status in answers.items() if status is not None and status >= 500}
    assert not server_errors, (
        f"malformed requests got 5xx answers: {server_errors}; the receiver's log:\n{server.log()[-3000:]}"
    )
    assert_workers_intact(server, before)


def test_fuzzed_pushes_over_gunicorn_keep_workers_alive(
    abused: ExporterProcess, influx: LocalInflux, bucket: str
) -> None:
    """The same generated inputs through real gunicorn: never a 500, rejected pushes store nothing."""
    before = sorted(abused.worker_pids())
    watch = StoreWatch(influx, bucket)

    def send(request: FuzzRequest) -> tuple[int, bytes]:
        response = requests.post(
            f"{abused.url}{request.path}", data=request.body, headers=request.headers(), timeout=10
        )
        assert sorted(abused.worker_pids()) == before, f"{request!r} cost a worker:\n{abused.log()[-3000:]}"
        return response.status_code, response.content

    fuzz(send, watch, 60)
    assert_workers_intact(abused, before)
