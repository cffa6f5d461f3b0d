"""nginx in front of several receivers, round robin, set up as the example Ingress sets up its controller.

The scale test (tests/test_scale.py) and the multi-instance benchmark (bench/run.py) put it between the
simulated cameras and two or more ``axis-exporter serve``. What it does is what an ingress-nginx
controller does with deploy/kubernetes/ingress.yaml: it reads the whole request body before choosing a
receiver (proxy-request-buffering on), accepts bodies up to proxy-body-size, waits proxy-read-timeout for
the answer, keeps idle connections to the receivers open, and passes a request whose connection was
refused to the next receiver ("error timeout", ingress-nginx's proxy-next-upstream default:
kubernetes/ingress-nginx docs/user-guide/nginx-configuration/configmap.md; nginx never passes a POST on
once it was sent to a receiver: nginx.org ngx_http_proxy_module, proxy_next_upstream, non_idempotent).
A receiver that refuses connections is skipped for ``fail_timeout`` seconds, as a controller stops
sending to a pod that is no longer ready.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from exporter.influxd_bridge import find_program, nginx_command
from exporter.processes import ChildProcess, ProcessFailed, free_port

PROBE = "/balancer-probe"


class Balancer:
    """An nginx master with one worker, listening on a free loopback port, spreading over ``upstreams``."""

    def __init__(
        self,
        base_dir: Path,
        upstreams: list[int],
        *,
        body_size: str = "64m",
        read_timeout: int = 120,
        send_timeout: int = 120,
        request_buffering: bool = True,
        fail_timeout: int = 2,
    ) -> None:
        self.base_dir = base_dir
        self.upstreams = list(upstreams)
        self.port = free_port()
        self.body_size = body_size
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.request_buffering = request_buffering
        self.fail_timeout = fail_timeout
        self.process: ChildProcess | None = None

    @property
    def url(self) -> str:
        """Base URL the cameras push to."""
        return f"http://127.0.0.1:{self.port}"

    def http_config(self) -> str:
        """The http block of its nginx.conf (exporter.influxd_bridge.nginx_command writes the rest)."""
        servers = "\n".join(
            f"    server 127.0.0.1:{port} max_fails=1 fail_timeout={self.fail_timeout}s;"
            for port in self.upstreams
        )
        buffering = "on" if self.request_buffering else "off"
        return f"""  upstream receivers {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    client_max_body_size {self.body_size};
    location = {PROBE} {{
      return 204;
    }}
    location / {{
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_request_buffering {buffering};
      proxy_read_timeout {self.read_timeout}s;
      proxy_send_timeout {self.send_timeout}s;
      proxy_next_upstream error timeout;
      proxy_pass http://receivers;
    }}
  }}
"""

    def start(self, timeout: float = 30.0) -> Balancer:
        """Write the configuration, start nginx and wait until it answers its probe."""
        nginx = find_program("nginx")
        command = nginx_command(nginx, self.base_dir, self.http_config(), worker_connections=4096)
        self.process = ChildProcess(command, self.base_dir / "startup.log", name="nginx (balancer)")

        def answers() -> bool:
            with urllib.request.urlopen(f"{self.url}{PROBE}", timeout=1) as response:
                return bool(response.status == 204)

        try:
            self.process.wait_ready(answers, timeout)
        except ProcessFailed as exc:
            raise RuntimeError(f"{exc.reason}: {self.log()[-2000:]}") from None
        return self

    def pids(self) -> list[int]:
        """The master and its worker (for CPU accounting)."""
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *self.process.children()]

    def log(self) -> str:
        """nginx's error log and start-up output."""
        parts = []
        for name in ("startup.log", "error.log"):
            path = self.base_dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop nginx (SIGTERM, its fast shutdown), then wait."""
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
