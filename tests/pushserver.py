"""A scripted receiver for the simulator's tests: a small real HTTP(S) server on 127.0.0.1 that answers
each push as its script says and stores what it acknowledged the way InfluxDB does (same sensor and minute
overwrites)."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

Answer = int | Literal["drop", "store_then_drop"]
Script = Callable[[int, dict[str, Any]], Answer]


@dataclass
class Received:
    """One request the test server got, and how it answered."""

    payload: dict[str, Any]
    headers: dict[str, str]
    answer: Answer


@dataclass
class PushServer:
    """A scripted receiver: answers per `script`, stores acknowledged minutes keyed like InfluxDB points."""

    script: Script
    url: str = ""
    received: list[Received] = field(default_factory=list)
    stored: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self, payload: dict[str, Any]) -> None:
        """Keep each measurement under (serial, utcFrom); a re-send overwrites, as in InfluxDB."""
        serial = payload["sensor"]["serial"]
        for measurement in payload["data"]["measurements"]:
            values = {"count_in": 0, "count_out": 0, "adults_in": 0, "adults_out": 0}
            for item in measurement["items"] or []:
                values[f"count_{item['direction']}"] = item["count"]
                values[f"adults_{item['direction']}"] = item.get("adults", 0)
            self.stored[(serial, measurement["utcFrom"])] = values

    def stored_totals(self, serial: str | None = None) -> dict[str, int]:
        """Sums over what was stored (optionally for one serial)."""
        sums = {"intervals": 0, "count_in": 0, "count_out": 0, "adults_in": 0, "adults_out": 0}
        for (stored_serial, _), values in self.stored.items():
            if serial is None or stored_serial == serial:
                sums["intervals"] += 1
                for key, value in values.items():
                    sums[key] += value
        return sums

    def data_pushes(self, serial: str | None = None) -> list[Received]:
        """Requests that carried data, in arrival order."""
        return [
            request
            for request in self.received
            if "data" in request.payload and (serial is None or request.payload["sensor"]["serial"] == serial)
        ]


def fail_first_data_push(serial: str, answer: Answer) -> Script:
    """Answer the first data push of one sensor with `answer`, everything else with 200."""
    failed: list[bool] = []

    def script(_index: int, payload: dict[str, Any]) -> Answer:
        if "data" in payload and payload["sensor"]["serial"] == serial and not failed:
            failed.append(True)
            return answer
        return 200

    return script


def always(answer: Answer) -> Script:
    """A script that always gives the same answer."""
    return lambda _index, _payload: answer


def sequence(*answers: Answer) -> Script:
    """Answers in order for the first requests, then 200."""
    return lambda index, _payload: answers[index] if index < len(answers) else 200


def make_handler(server: PushServer) -> type[http.server.BaseHTTPRequestHandler]:
    """Request handler bound to one PushServer."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            payload = orjson.loads(body)
            with server.lock:
                answer = server.script(len(server.received), payload)
                server.received.append(Received(payload, dict(self.headers.items()), answer))
                if (answer == 200 or answer == "store_then_drop") and "data" in payload:
                    server.store(payload)
            if answer in ("drop", "store_then_drop"):
                self.close_connection = True  # no status line at all: the client sees a lost connection
                return
            assert isinstance(answer, int)
            reply = b'{"status":"ok"}' if answer == 200 else b'{"status":"error"}'
            self.send_response(answer)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@contextmanager
def push_server(script: Script | None = None, tls: tuple[Path, Path] | None = None) -> Iterator[PushServer]:
    """Run a PushServer on a free loopback port (HTTPS with (cert, key)); by default it always says 200."""
    state = PushServer(script or always(200))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile=tls[0], keyfile=tls[1])
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}/push"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
