"""A local InfluxDB for development and tests: Debian's influxd 1.x behind an nginx bridge.

influxdb-client writes through ``/api/v2/write`` (InfluxDB 1.8+ and 2.x). Debian ships influxd 1.6,
which only has ``/write``; nginx maps one onto the other (bucket -> db, precision ns/us -> n/u) and
checks the token, so the client library talks to the real storage engine exactly as in production.
Queries use influxd's InfluxQL ``/query`` (through the bridge, with the token, as from InfluxDB 2.x).
Everything runs on loopback in one directory.

A local InfluxDB is only ever one that this object started: its directory is locked for as long as it or
its processes run (a second one refuses and names the holder), a port that another process holds is
never mistaken for ours (readiness checks that the listening socket belongs to the process we started,
and the bridge answers with this instance's id), and ports that are merely preferred give way to free
ones when taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Self

from exporter.influxread import rows_of
from exporter.processes import ChildProcess, ProcessExited, ProcessNotReady, free_port, log_tail

INSTALL_HINT = "install Debian's packages: apt-get install influxdb nginx-light (or run ./scripts/setup)"
LOCK_FILE = "lock"
# Every answer of the bridge carries this header with the instance's id: readiness checks it.
INSTANCE_HEADER = "X-Axis-Exporter-Local-Influx"
# The bridge answers this path itself (no influxd needed), for its readiness check.
BRIDGE_PROBE = "/axis-exporter-bridge"
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,200}")
_TCP_LISTEN = "0A"
_LOOPBACK = ipaddress.ip_address("127.0.0.1")
_ANY_V4 = ipaddress.ip_address("0.0.0.0")
_ANY_V6 = ipaddress.ip_address("::")


class LocalInfluxError(RuntimeError):
    """The local InfluxDB or its bridge could not be started."""


class LocalInfluxBusy(LocalInfluxError):
    """Another local InfluxDB (another process, or one it left behind) uses this directory."""

    def __init__(self, base_dir: Path, holder: str) -> None:
        super().__init__(f"{base_dir} is in use by another local InfluxDB: {holder}")
        self.base_dir = base_dir
        self.holder = holder


class _PortTaken(LocalInfluxError):
    """Our process ended because another process holds its port."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def find_program(program: str) -> str:
    """The path of a Debian program (also in sbin, which a non-root PATH may lack)."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise LocalInfluxError(f"{program} not found: {INSTALL_HINT}")
    return found


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address from /proc/net/tcp{,6}: 32-bit words in the host's byte order."""
    raw = bytes.fromhex(hex_address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def _reaches_loopback(hex_address: str) -> bool:
    """Whether a socket listening on this address takes connections to 127.0.0.1."""
    address = _address(hex_address)
    if isinstance(address, ipaddress.IPv6Address):
        address = address.ipv4_mapped or address
    return address in (_LOOPBACK, _ANY_V4, _ANY_V6)


def listening_inodes(port: int) -> set[int]:
    """Inodes of the sockets that listen on ``port`` and would take a connection to 127.0.0.1."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        raise LocalInfluxError("the local InfluxDB needs Linux's /proc to check who listens on its ports")
    inodes: set[int] = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            address, _, port_hex = fields[1].partition(":")
            if int(port_hex, 16) == port and _reaches_loopback(address):
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (empty if it is gone or not ours to see)."""
    found: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return found
    for name in names:
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{name}")
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def describe_process(pid: int) -> str:
    """``pid N (command line)``, shortened; just ``pid N`` when its command line cannot be read."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    command = command.strip()
    if len(command) > 120:
        command = command[:117] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def port_holder(port: int) -> str | None:
    """Who listens on 127.0.0.1:``port``: the process(es) if visible, None if nobody listens."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    holders: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and socket_inodes(int(entry.name)) & inodes:
            holders.append(int(entry.name))
    if not holders:
        return "a process this user cannot see"
    # nginx's workers share the master's socket: name the oldest (lowest pid is good enough here).
    return describe_process(min(holders))


def port_is_free(port: int) -> bool:
    """Whether influxd or nginx could listen on 127.0.0.1:``port`` now (both set SO_REUSEADDR)."""
    if listening_inodes(port):
        return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def nginx_command(nginx: str, directory: Path, http: str, worker_connections: int = 1024) -> list[str]:
    """The command that runs nginx in the foreground with ``http`` inside its http block and everything
    else (pid, logs, temp files, nginx.conf) in ``directory``, which gets its temp folders."""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    # Started as root, nginx's workers would switch to an unprivileged user that cannot write the
    # temp paths in this private directory; keep them as the invoking user instead.
    user = "user root root;" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(
        f"""{user}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  client_body_temp_path {directory}/client_body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
{http}}}
""",
        encoding="utf-8",
    )
    return [nginx, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]


class LocalInflux:
    """influxd + nginx bridge on loopback ports, with data under ``base_dir``.

    ``influxd_port``/``bridge_port``: exactly these ports. Otherwise ``preferred_ports`` (influxd, bridge)
    when they are free, else free ones; ``moved`` then says which were taken and by whom.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        token: str = "local-dev-token",
        influxd_port: int | None = None,
        bridge_port: int | None = None,
        preferred_ports: tuple[int, int] | None = None,
    ) -> None:
        if not _TOKEN.fullmatch(token):
            raise ValueError(
                "the local InfluxDB's token must be 1-200 characters of A-Z a-z 0-9 . _ ~ + / = -"
            )
        self.base_dir = base_dir.resolve()
        self.token = token
        self.instance = uuid.uuid4().hex
        preferred = preferred_ports or (None, None)
        self.influxd_port = influxd_port or preferred[0] or free_port()
        self.bridge_port = bridge_port or preferred[1] or free_port()
        self._movable = {"influxd": influxd_port is None, "bridge": bridge_port is None}
        self.moved: list[str] = []
        self._influxd: ChildProcess | None = None
        self._nginx: ChildProcess | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        """What INFLUXDB_V2_URL points at: the bridge."""
        return f"http://127.0.0.1:{self.bridge_port}"

    @property
    def influxd_url(self) -> str:
        """influxd itself, for InfluxQL queries without a token."""
        return f"http://127.0.0.1:{self.influxd_port}"

    @property
    def influxd_pid(self) -> int | None:
        """The influxd this object started, while it runs."""
        return self._influxd.pid if self._influxd is not None and self._influxd.poll() is None else None

    @property
    def bridge_pid(self) -> int | None:
        """The nginx master this object started, while it runs."""
        return self._nginx.pid if self._nginx is not None and self._nginx.poll() is None else None

    def start(self) -> Self:
        """Lock the directory, start influxd and the bridge, and wait until both answer as ours."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._start_influxd(initial=True)
            self._start_bridge(initial=True)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop both processes (data stays on disk) and release the directory."""
        for process in (self._nginx, self._influxd):
            if process is not None:
                process.stop()
        if self._lock_fd is not None:
            # Closed, not unlocked: LOCK_UN would also release the copies our children hold.
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _lock(self) -> None:
        """Take the directory's lock, or raise LocalInfluxBusy naming who holds it.

        influxd and nginx inherit the lock, so a directory stays locked while processes left behind by a
        killed owner still run.
        """
        if self._lock_fd is not None:
            return
        path = self.base_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise LocalInfluxBusy(self.base_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._record()

    def _holder(self, fd: int) -> str:
        """Who holds the lock, from what the holder wrote into it."""
        try:
            loaded = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            loaded = None
        recorded: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
        owner = recorded.get("pid")
        children = [(name, recorded.get(name)) for name in ("influxd", "nginx")]
        running = [
            f"{name} {describe_process(pid)}"
            for name, pid in children
            if isinstance(pid, int) and str(self.base_dir) in describe_process(pid)
        ]
        if isinstance(owner, int) and _alive(owner):
            return describe_process(owner)
        if running:
            gone = f"pid {owner} is gone, but " if isinstance(owner, int) else ""
            return f"{gone}what it started still runs: {', '.join(running)}; stop it"
        return "a process that did not say who it is"

    def _record(self) -> None:
        """Write who holds the lock (this process and its influxd and nginx) into the lock file."""
        if self._lock_fd is None:
            return
        record = {"pid": os.getpid(), "influxd": self.influxd_pid, "nginx": self.bridge_pid}
        data = json.dumps(record).encode()
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, data, 0)

    def _launch(self, name: str, command: list[str], log_path: Path) -> ChildProcess:
        """Start ``command`` logging to ``log_path``; it inherits the directory's lock."""
        pass_fds = (self._lock_fd,) if self._lock_fd is not None else ()
        return ChildProcess(command, log_path, name=name, pass_fds=pass_fds)

    def _move(self, which: str, port: int, holder: str) -> int:
        """A free port instead of ``port`` (held by ``holder``); noted in ``moved``."""
        other = self.bridge_port if which == "influxd" else self.influxd_port
        new = free_port()
        while new == other:
            new = free_port()
        self.moved.append(f"127.0.0.1:{port} is taken by {holder}: {which} listens on {new} instead")
        return new

    def _free_or_moved(self, which: str, port: int, initial: bool) -> int:
        if initial and self._movable[which] and not port_is_free(port):
            return self._move(which, port, port_holder(port) or "another process")
        return port

    def _start_influxd(self, *, initial: bool) -> None:
        influxd = find_program("influxd")
        self.influxd_port = self._free_or_moved("influxd", self.influxd_port, initial)
        for attempt in range(3):
            try:
                self._launch_influxd(influxd)
                return
            except _PortTaken as exc:
                if not (initial and self._movable["influxd"]) or attempt == 2:
                    raise
                self.influxd_port = self._move("influxd", self.influxd_port, exc.holder)

    def _launch_influxd(self, influxd: str) -> None:
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
        self._influxd = self._launch("influxd", [influxd, "-config", str(config)], log_path)
        self._record()
        self._wait_ours("influxd", self._influxd, self.influxd_port, f"{self.influxd_url}/ping", log_path)

    def _start_bridge(self, *, initial: bool) -> None:
        nginx = find_program("nginx")
        self.bridge_port = self._free_or_moved("bridge", self.bridge_port, initial)
        for attempt in range(3):
            try:
                self._launch_bridge(nginx)
                return
            except _PortTaken as exc:
                if not (initial and self._movable["bridge"]) or attempt == 2:
                    raise
                self.bridge_port = self._move("bridge", self.bridge_port, exc.holder)

    def _launch_bridge(self, nginx: str) -> None:
        temp = self.base_dir / "nginx"
        unauthorized = '\'{"code":"unauthorized","message":"unauthorized access"}\''
        http = f"""  client_max_body_size 0;
  client_body_buffer_size 64m;
  proxy_read_timeout 300s;
  map $arg_precision $v1_precision {{ default n; ns n; us u; ms ms; s s; }}
  map $http_authorization $token_ok {{ default 0; "Token {self.token}" 1; }}
  upstream influxd {{ server 127.0.0.1:{self.influxd_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{self.bridge_port};
    add_header {INSTANCE_HEADER} "{self.instance}" always;
    default_type application/json;
    location = {BRIDGE_PROBE} {{
      return 204;
    }}
    location = /ping {{
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://influxd;
    }}
    location = /api/v2/write {{
      if ($token_ok = 0) {{
        return 401 {unauthorized};
      }}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_pass http://influxd/write?db=$arg_bucket&precision=$v1_precision;
    }}
    location / {{
      if ($token_ok = 0) {{
        return 401 {unauthorized};
      }}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://influxd;
    }}
  }}
"""
        command = nginx_command(nginx, temp, http)
        self._nginx = self._launch("nginx", command, temp / "startup.log")
        self._record()
        self._wait_ours(
            "nginx", self._nginx, self.bridge_port, f"{self.url}{BRIDGE_PROBE}", temp / "error.log"
        )

    def _answers_as_ours(self, name: str, url: str) -> bool:
        """Whether ``url`` answers with the marks of our influxd or bridge."""
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                headers = response.headers
        except urllib.error.HTTPError as exc:
            headers = exc.headers
        except OSError:
            return False
        if name == "nginx":
            return bool(headers.get(INSTANCE_HEADER) == self.instance)
        return headers.get("X-Influxdb-Version") is not None

    def _wait_ours(self, name: str, process: ChildProcess, port: int, url: str, log_path: Path) -> None:
        """Until ``process`` owns every socket listening on ``port`` and answers on ``url``.

        Another process's answer on the same port never counts: it may be another local InfluxDB.
        """

        def ours() -> bool:
            listeners = listening_inodes(port)
            return (
                bool(listeners)
                and listeners <= socket_inodes(process.pid)
                and self._answers_as_ours(name, url)
            )

        try:
            process.wait_ready(ours, timeout=30)
        except ProcessExited as exc:
            holder = port_holder(port)
            message = (
                f"{name} (pid {process.pid}) exited with {exc.returncode} "
                f"before listening on 127.0.0.1:{port}"
            )
            if holder is not None:
                message += f": that port is taken by {holder}"
            message += f"; the end of its log {log_path}:\n{log_tail(log_path)}"
            if holder is not None:
                raise _PortTaken(message, holder) from None
            raise LocalInfluxError(message) from None
        except ProcessNotReady:
            holder = port_holder(port)
            foreign = listening_inodes(port) - socket_inodes(process.pid)
            why = f"127.0.0.1:{port} is held by {holder}" if foreign and holder else "it did not answer"
            raise LocalInfluxError(
                f"{name} (pid {process.pid}) was not ready on 127.0.0.1:{port} within 30 s: {why}; "
                f"the end of its log {log_path}:\n{log_tail(log_path)}"
            ) from None

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
        return [
            row for statement in self._query_raw(query, database)["results"] for row in rows_of(statement)
        ]
