"""A local InfluxDB for development and tests: Debian's influxd 1.x behind an nginx bridge.

influxdb-client writes through ``/api/v2/write`` (InfluxDB 1.8+ and 2.x). Debian ships influxd 1.6,
which only has ``/write``; nginx maps one onto the other (bucket -> db, precision ns/us -> n/u) and
checks the token, so the client library talks to the real storage engine exactly as in production.
Queries use influxd's InfluxQL ``/query``. Everything runs on loopback in one directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

INSTALL_HINT = "install Debian's packages: apt-get install influxdb nginx-light (or run ./scripts/setup)"


class LocalInfluxError(RuntimeError):
    """The local InfluxDB or its bridge could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise LocalInfluxError(f"{program} not found: {INSTALL_HINT}")
    return found


def _wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalInfluxError(
                f"{process.args!r} exited with {process.returncode}; its log {log_path}:\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers: that is all we wait for
        except OSError:
            time.sleep(0.05)
    raise LocalInfluxError(f"{url} did not answer within {timeout:.0f} s; see {log_path}")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class LocalInflux:
    """influxd + nginx bridge on loopback ports, with data under ``base_dir``."""

    def __init__(
        self,
        base_dir: Path,
        *,
        token: str = "local-dev-token",
        influxd_port: int | None = None,
        bridge_port: int | None = None,
    ) -> None:
        self.base_dir = base_dir.resolve()
        self.token = token
        self.influxd_port = influxd_port or free_port()
        self.bridge_port = bridge_port or free_port()
        self._influxd: subprocess.Popen[bytes] | None = None
        self._nginx: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What INFLUXDB_V2_URL points at: the bridge."""
        return f"http://127.0.0.1:{self.bridge_port}"

    @property
    def influxd_url(self) -> str:
        """influxd itself, for InfluxQL queries."""
        return f"http://127.0.0.1:{self.influxd_port}"

    def start(self) -> LocalInflux:
        """Start influxd and the bridge and wait until both answer."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.start_influxd()
        self.start_bridge()
        return self

    def close(self) -> None:
        """Stop both processes (data stays on disk)."""
        _stop(self._nginx)
        _stop(self._influxd)

    def __enter__(self) -> LocalInflux:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start_influxd(self) -> None:
        """Start (or restart) influxd on its port."""
        influxd = _find("influxd")
        config = self.base_dir / "influxdb.conf"
        rpc_port = free_port()
        # bind-address moves the RPC port off 8088, which may be taken by another instance.
        config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{self.base_dir}/meta"
[data]
  dir = "{self.base_dir}/data"
  wal-dir = "{self.base_dir}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.influxd_port}"
  log-enabled = false
  auth-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[logging]
  level = "warn"
"""
        )
        log_path = self.base_dir / "influxd.log"
        with log_path.open("ab") as log_file:
            self._influxd = subprocess.Popen(
                [influxd, "-config", str(config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        _wait_http(f"{self.influxd_url}/ping", self._influxd, log_path)

    def stop_influxd(self) -> None:
        """Stop influxd: writes then fail as with a storage outage."""
        _stop(self._influxd)

    def pause_influxd(self) -> None:
        """Freeze influxd (SIGSTOP): requests hang, as with an overloaded server, until resumed."""
        if self._influxd is not None:
            self._influxd.send_signal(signal.SIGSTOP)

    def resume_influxd(self) -> None:
        """Let a paused influxd go on (SIGCONT)."""
        if self._influxd is not None:
            self._influxd.send_signal(signal.SIGCONT)

    def start_bridge(self) -> None:
        """Start (or restart) the nginx bridge on its port."""
        nginx = _find("nginx")
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.base_dir / "nginx" / name).mkdir(parents=True, exist_ok=True)
        temp = self.base_dir / "nginx"
        # Started as root, nginx's workers would switch to an unprivileged user that cannot write the
        # temp paths in this private directory; keep them as the invoking user instead.
        user = "user root root;" if os.geteuid() == 0 else ""
        config = temp / "nginx.conf"
        config.write_text(
            f"""{user}
daemon off;
worker_processes 1;
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {temp}/client_body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  client_max_body_size 0;
  client_body_buffer_size 64m;
  proxy_read_timeout 300s;
  map $arg_precision $v1_precision {{ default n; ns n; us u; ms ms; s s; }}
  upstream influxd {{ server 127.0.0.1:{self.influxd_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{self.bridge_port};
    location = /api/v2/write {{
      default_type application/json;
      if ($http_authorization != "Token {self.token}") {{
        return 401 '{{"code":"unauthorized","message":"unauthorized access"}}';
      }}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_pass http://influxd/write?db=$arg_bucket&precision=$v1_precision;
    }}
    location / {{
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://influxd;
    }}
  }}
}}
"""
        )
        log_path = temp / "startup.log"
        with log_path.open("ab") as log_file:
            self._nginx = subprocess.Popen(
                [nginx, "-p", str(temp), "-e", str(temp / "error.log"), "-c", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        _wait_http(f"{self.url}/ping", self._nginx, temp / "error.log")

    def stop_bridge(self) -> None:
        """Stop the bridge: the receiver then sees InfluxDB as unreachable."""
        _stop(self._nginx)

    def _query_raw(self, query: str, database: str | None = None, method: str = "GET") -> dict[str, Any]:
        params = {"q": query, "epoch": "s"}
        if database:
            params["db"] = database
        encoded = urllib.parse.urlencode(params)
        if method == "POST":
            request = urllib.request.Request(
                f"{self.influxd_url}/query", data=encoded.encode(), method="POST"
            )
        else:
            request = urllib.request.Request(f"{self.influxd_url}/query?{encoded}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                result: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            raise LocalInfluxError(f"query {query!r} failed: {exc.read().decode(errors='replace')}") from exc
        for statement in result.get("results", []):
            if "error" in statement:
                raise LocalInfluxError(f"query {query!r} failed: {statement['error']}")
        return result

    def create_database(self, name: str, retention: str | None = None) -> None:
        """Create database ``name`` (optionally with a default retention such as ``1h``)."""
        query = f'CREATE DATABASE "{name}"'
        if retention:
            query += f" WITH DURATION {retention}"
        self._query_raw(query, method="POST")

    def query(self, database: str, query: str) -> list[dict[str, Any]]:
        """Run InfluxQL; one dict per row (tags of grouped series included), times in unix seconds."""
        rows: list[dict[str, Any]] = []
        for statement in self._query_raw(query, database)["results"]:
            for series in statement.get("series", []):
                tags = series.get("tags", {})
                for values in series.get("values", []):
                    rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return rows
