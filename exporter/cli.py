"""Command line: ``axis-exporter serve|simulate|certs``. Every option also reads an environment variable."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import click

from exporter import __version__
from exporter.config import Config, ConfigError, InfluxConfig, load_config

log = logging.getLogger("exporter")

LOCAL_BUCKET = "axis"
# Preferred ports of the local InfluxDB; free ones are used when another process holds these.
LOCAL_INFLUXD_PORT = 8186
LOCAL_BRIDGE_PORT = 8187
# Free in Prometheus' "Default port allocations" list (see README, Admin listener).
DEFAULT_ADMIN_PORT = 10464
DEFAULT_ADMIN_BIND = f"127.0.0.1:{DEFAULT_ADMIN_PORT}"


def configure_logging(level: str) -> None:
    """One format for the receiver's and gunicorn's lines."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


class LazyGroup(click.Group):
    """Imports a command's module only when the command runs: ``serve``'s gunicorn master must not load
    the simulator's HTTP client (urllib3), which gevent could then no longer patch in the workers."""

    LAZY: ClassVar[dict[str, str]] = {
        "certs": "exporter.certs:certs",
        "check-secrets": "exporter.stackcheck:check_secrets_command",
        "relabel": "exporter.relabel:relabel_command",
        "simulate": "exporter.simulator.command:simulate",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, the lazy ones included."""
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command ``name``, imported on first use."""
        if name in self.LAZY:
            module, _, attribute = self.LAZY[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="axis-exporter")
def main() -> None:
    """Receive Axis people counters' Generic Data Push, store it in InfluxDB, expose Prometheus metrics."""


@contextlib.contextmanager
def _local_influx(config: Config, directory: Path) -> Iterator[Config]:
    """Start a local InfluxDB when none is configured, so a newcomer gets a working receiver at once.

    It is always one this ``serve`` started: the directory is locked (a second ``serve`` in it refuses),
    and the preferred ports give way to free ones when another process holds them.
    """
    if config.influx is not None:
        yield config
        return
    from exporter.influxd_bridge import LocalInflux, LocalInfluxBusy, LocalInfluxError

    local = LocalInflux(directory / "influxdb", preferred_ports=(LOCAL_INFLUXD_PORT, LOCAL_BRIDGE_PORT))
    try:
        local.start()
        local.create_database(LOCAL_BUCKET)
    except LocalInfluxBusy as exc:
        local.close()
        raise click.ClickException(
            f"INFLUXDB_V2_URL is not set, and the local InfluxDB in {directory} belongs to another "
            f"serve: {exc.holder}. Stop that one, give this one its own --local-dir "
            "(AXIS_EXPORTER_LOCAL_DIR), or set INFLUXDB_V2_URL to an InfluxDB you run."
        ) from None
    except LocalInfluxError as exc:
        local.close()
        raise click.ClickException(
            f"INFLUXDB_V2_URL is not set and a local InfluxDB could not start: {exc}"
        ) from None
    for note in local.moved:
        log.warning("local InfluxDB: %s", note)
    log.warning(
        "INFLUXDB_V2_URL is not set: using a local InfluxDB (influxd on 127.0.0.1:%d, its write bridge on "
        "127.0.0.1:%d) with data in %s. Look at what arrives with: "
        "curl -sG %s/query --data-urlencode db=%s --data-urlencode 'q=SELECT * FROM people_count'",
        local.influxd_port,
        local.bridge_port,
        local.base_dir,
        local.influxd_url,
        LOCAL_BUCKET,
    )
    owner = os.getpid()
    try:
        yield dataclasses.replace(
            config, influx=InfluxConfig(url=local.url, org="-", token=local.token, bucket=LOCAL_BUCKET)
        )
    finally:
        # gunicorn's workers leave through sys.exit, which unwinds this block in them too.
        if os.getpid() == owner:
            local.close()


def parse_bind(bind: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); ValueError naming ``option``."""
    host, sep, port_text = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{option} {bind!r} is not HOST:PORT (e.g. 127.0.0.1:10464)")
    return host, int(port_text)


def listen_admin(bind: str, option: str) -> socket.socket:
    """A listening socket on ``bind``, made before anything forks so that a taken port stops the start."""
    host, port = parse_bind(bind, option)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=64)
    except OSError as exc:
        raise OSError(f"{option} {bind}: cannot listen there ({exc.strerror or exc})") from exc


@contextlib.contextmanager
def _metrics_dir(configured: Path | None) -> Iterator[Path]:
    """The workers' shared metrics directory: the configured one, checked, or a private temporary one.

    A temporary one is removed when ``serve`` ends; a configured one is left in place (it may be shared).
    """
    if configured is None:
        created = Path(tempfile.mkdtemp(prefix="axis-exporter-metrics-"))
        owner = os.getpid()
        try:
            yield created
        finally:
            # gunicorn's workers leave through sys.exit, which unwinds this block in them too.
            if os.getpid() == owner:
                shutil.rmtree(created, ignore_errors=True)
        return
    try:
        configured.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=configured):
            pass
    except OSError as exc:
        raise click.ClickException(
            f"PROMETHEUS_MULTIPROC_DIR={configured} is not writable by uid {os.getuid()} "
            f"({exc.strerror or exc}): give that user a directory it can write, or unset the variable "
            "and serve makes a private one in the temporary directory"
        ) from None
    yield configured


def _warn_if_unreachable(influx: InfluxConfig) -> None:
    """Say at start when InfluxDB does not answer, rather than only with the first 503."""
    try:
        with urllib.request.urlopen(f"{influx.url}/ping", timeout=3):
            pass
    except urllib.error.HTTPError:
        pass  # it answers: what it thinks of the request does not matter here
    except OSError as exc:
        log.warning(
            "InfluxDB at %s does not answer (%s): pushes are answered 503 until it does; check "
            "INFLUXDB_V2_URL and that InfluxDB runs",
            influx.shown_url,
            getattr(exc, "reason", exc),
        )


@main.command()
@click.option(
    "--bind",
    envvar="AXIS_EXPORTER_BIND",
    default="0.0.0.0:8080",
    show_default=True,
    help="HOST:PORT to listen on. [env AXIS_EXPORTER_BIND]",
)
@click.option(
    "--admin-bind",
    envvar="AXIS_EXPORTER_ADMIN_BIND",
    default=DEFAULT_ADMIN_BIND,
    show_default=True,
    help="HOST:PORT of the admin listener: the status page, /api/status, /metrics, /readyz, /healthz "
    "(plain HTTP, never for cameras). "
    "[env AXIS_EXPORTER_ADMIN_BIND]",
)
@click.option(
    "--workers",
    envvar="AXIS_EXPORTER_WORKERS",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Worker processes. [env AXIS_EXPORTER_WORKERS]",
)
@click.option(
    "--connections",
    envvar="AXIS_EXPORTER_CONNECTIONS",
    type=click.IntRange(10, 100_000),
    default=1000,
    show_default=True,
    help="Open connections per worker (each is a greenlet; slow and idle ones are closed at their "
    "deadline). [env AXIS_EXPORTER_CONNECTIONS]",
)
@click.option(
    "--certfile",
    envvar="AXIS_EXPORTER_CERTFILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve HTTPS with this certificate (PEM). [env AXIS_EXPORTER_CERTFILE]",
)
@click.option(
    "--keyfile",
    envvar="AXIS_EXPORTER_KEYFILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Private key of --certfile (PEM). [env AXIS_EXPORTER_KEYFILE]",
)
@click.option(
    "--local-dir",
    envvar="AXIS_EXPORTER_LOCAL_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".axis-exporter"),
    show_default=True,
    help="Where the local InfluxDB keeps its data when INFLUXDB_V2_URL is not set (one serve per "
    "directory). [env AXIS_EXPORTER_LOCAL_DIR]",
)
@click.option(
    "--sensors-file",
    envvar="AXIS_EXPORTER_SENSORS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML file giving serials their site, zone and further labels; checked at start, reloaded "
    "when it changes and on SIGHUP. [env AXIS_EXPORTER_SENSORS_FILE]",
)
def serve(
    bind: str,
    admin_bind: str,
    workers: int,
    connections: int,
    certfile: str | None,
    keyfile: str | None,
    local_dir: Path,
    sensors_file: Path | None,
) -> None:
    """Run the receiver under gunicorn, with the admin listener in a process beside the workers."""
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    if bool(certfile) != bool(keyfile):
        raise click.ClickException("--certfile and --keyfile go together: give both or neither")
    configure_logging(config.log_level)
    # Before anything starts: a broken file stops the start, with its line and rule.
    from exporter.sensorsfile import SensorsFile, SensorsFileError

    # Absolute: every process opens it, whatever its working directory.
    config = dataclasses.replace(config, sensors_file=sensors_file.absolute() if sensors_file else None)
    try:
        sensors = SensorsFile(config.sensors_file, config.limits.serial_pattern)
    except SensorsFileError as exc:
        raise click.ClickException(str(exc)) from None
    if sensors.path is not None:
        log.info("sensors file %s: %d sensors", sensors.path, len(sensors.assigned()))
    # The local InfluxDB first: a second serve in the same --local-dir then says so, whatever else it shares.
    with _local_influx(config, local_dir) as config:
        influx = config.influx
        assert influx is not None
        try:
            admin_socket = listen_admin(admin_bind, "--admin-bind (AXIS_EXPORTER_ADMIN_BIND)")
        except (ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        with admin_socket, _metrics_dir(config.prometheus_multiproc_dir) as multiproc_dir:
            # prometheus_client picks its multiprocess storage when first imported: set the variable first.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
            from exporter.server import AdminProcess, GunicornServer, ServerOptions, reset_multiprocess_dir
            from exporter.status import ListenerInfo

            reset_multiprocess_dir(multiproc_dir)
            config = dataclasses.replace(config, prometheus_multiproc_dir=multiproc_dir)
            options = ServerOptions(
                bind=bind, workers=workers, worker_connections=connections, certfile=certfile, keyfile=keyfile
            )
            log.info(
                "axis-exporter %s: pushes on %s://%s (%d workers x %d connections), admin on http://%s, "
                "writing to %s bucket %s",
                __version__,
                "https" if certfile else "http",
                bind,
                workers,
                connections,
                admin_bind,
                influx.shown_url,
                influx.bucket,
            )
            _warn_if_unreachable(influx)
            listener = ListenerInfo(bind=bind, workers=workers, connections=connections, certfile=certfile)
            GunicornServer(config, options, AdminProcess(admin_socket, config, listener), sensors).run()
