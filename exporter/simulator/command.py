"""`axis-exporter simulate`: emulate Axis people counters pushing to a receiver."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import click

from exporter.config import DEFAULT_SERIAL_PATTERN
from exporter.sensorsfile import SensorsFileError, load_sensors_file
from exporter.simulator import (
    SITE_TIME_ZONES,
    Flavour,
    Progress,
    SensorIdentity,
    SimulationConfig,
    Summary,
    TrafficProfile,
    identities_from_sensors_file,
    make_identities,
    run_simulation,
    sensors_file_text,
    site_identities,
    site_time_zones,
)
from exporter.simulator.device import DEFAULT_SERIAL_PREFIX, DEFAULT_TIME_ZONE, check_time_zone
from exporter.simulator.sites import SENSORS_PER_SITE

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
PIPE_PROGRESS_SECONDS = 10.0  # when stderr is a file or pipe, print a line this often instead of redrawing


def parse_duration(text: str) -> dt.timedelta:
    """'90d', '1h30m', '45s', '2w' or '0' as a timedelta."""
    compact = text.strip().lower().replace(" ", "")
    if compact == "0":
        return dt.timedelta(0)
    if not compact or _DURATION_PART.sub("", compact):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90d, 1h30m, 45s)")
    seconds = sum(float(value) * _DURATION_UNITS[unit] for value, unit in _DURATION_PART.findall(compact))
    return dt.timedelta(seconds=seconds)


def parse_start(text: str) -> dt.datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    moment = dt.datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def duration_option(ctx: click.Context, param: click.Parameter, value: str) -> dt.timedelta:
    """click callback: parse a duration option or fail with a usage error."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def start_option(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime | None:
    """click callback: parse an ISO 8601 start time or fail with a usage error."""
    if value is None:
        return None
    try:
        return parse_start(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"not an ISO 8601 time: {value!r} (e.g. 2021-03-28T00:00:00Z)", ctx, param
        ) from exc


def _identities(
    ctx: click.Context,
    *,
    sensors: int | None,
    sites: int | None,
    sensors_file: Path | None,
    time_zones: tuple[str, ...],
    flavour: Flavour,
    serial_prefix: str,
    name_prefix: str | None,
) -> list[SensorIdentity]:
    """The simulated devices the options ask for: numbered, spread over sites, or from a sensors file."""
    if sensors_file is not None:
        given = [
            option
            for option, name in (
                ("--sensors", "sensors"),
                ("--sites", "sites"),
                ("--serial-prefix", "serial_prefix"),
            )
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
        ]
        if given:
            raise ValueError(f"--sensors-file says which sensors there are: drop {', '.join(given)}")
        try:
            assigned = load_sensors_file(sensors_file, re.compile(DEFAULT_SERIAL_PATTERN))
        except SensorsFileError as exc:
            raise ValueError(str(exc)) from None
        return identities_from_sensors_file(
            assigned, time_zones=time_zones or SITE_TIME_ZONES, flavour=flavour, name_prefix=name_prefix
        )
    if sites is not None:
        return site_identities(
            sensors if sensors is not None else SENSORS_PER_SITE * sites,
            sites,
            time_zones=time_zones or SITE_TIME_ZONES,
            flavour=flavour,
            serial_prefix=serial_prefix,
            name_prefix=name_prefix,
        )
    return make_identities(
        sensors or 1,
        flavour=flavour,
        time_zones=time_zones or (DEFAULT_TIME_ZONE,),
        serial_prefix=serial_prefix,
        name_prefix=name_prefix,
    )


def _write_sensors_file(path: Path, identities: list[SensorIdentity]) -> None:
    """Write the sensors file for ``identities`` in one step (a serve following it never reads half)."""
    if not any(identity.labels for identity in identities):
        raise ValueError("--write-sensors-file needs sites: give --sites N (or --sensors-file)")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(sensors_file_text(identities), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise click.ClickException(f"--write-sensors-file {path}: {exc.strerror or exc}") from None
    zones = site_time_zones(identities)
    click.echo(f"Wrote {path}: {len(identities)} sensor(s) at {len(zones)} site(s)", err=True)


def _counts(counts: dict[str, int]) -> str:
    """'200: 5, 503: 2' or 'none'."""
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "none"


def format_summary(summary: Summary) -> str:
    """Human-readable end-of-run report."""
    delivered, pending = summary.delivered, summary.pending
    data = summary.as_dict()
    lines = [
        f"Simulated {len(summary.sensors)} sensor(s), {summary.interval_minutes}-minute send interval, "
        f"{summary.mode} mode, against {summary.url}",
        f"Period      {summary.simulated_from} .. {summary.simulated_to}  ({summary.wall_seconds:.1f} s wall)"
        + ("  INTERRUPTED" if summary.interrupted else ""),
        f"Pushes      {summary.pushes} (data {data['data_pushes']}), retries {summary.retries} "
        f"(re-sent {data['resent_intervals']} intervals)",
        f"Answers     {_counts(summary.answers)}; non-200: {_counts(summary.non_200)}; "
        f"connection errors: {_counts(summary.connection_errors)}",
        f"Delivered   {delivered.intervals} intervals ({delivered.null_intervals} with items null), "
        f"{delivered.items} items, in {delivered.count_in}, out {delivered.count_out}, "
        f"adults in {delivered.adults_in}, adults out {delivered.adults_out}",
        f"Undelivered {pending.intervals} intervals, in {pending.count_in}, out {pending.count_out}",
        "",
        f"{'sensor':<24} {'serial':<13} {'test':>5} {'intervals':>9} {'in':>8} {'out':>8} "
        f"{'adults in':>9} {'adults out':>10} {'pending':>7}",
    ]
    sites = summary.by_site()
    if sites:
        zones: dict[str | None, str] = {}
        for sensor in summary.sensors:
            zones.setdefault(sensor.labels.get("site"), sensor.time_zone)
        counts = Counter(sensor.labels.get("site") for sensor in summary.sensors)
        lines[-1:-1] = [
            f"{'site':<24} {'time zone':<20} {'sensors':>7} {'intervals':>9} {'in':>8} {'out':>8}",
            *(
                f"{site[:24]:<24} {zones[site][:20]:<20} {counts[site]:>7} {totals.intervals:>9} "
                f"{totals.count_in:>8} {totals.count_out:>8}"
                for site, totals in sites.items()
            ),
            "",
        ]
    for sensor in summary.sensors:
        lines.append(
            f"{sensor.name[:24]:<24} {sensor.serial:<13} {sensor.test_connection[:5]:>5} "
            f"{sensor.delivered.intervals:>9} {sensor.delivered.count_in:>8} {sensor.delivered.count_out:>8} "
            f"{sensor.delivered.adults_in:>9} {sensor.delivered.adults_out:>10} {sensor.pending.intervals:>7}"
        )
        if sensor.last_error and (sensor.pending.intervals or sensor.test_connection != "200"):
            lines.append(f"  last error: {sensor.last_error}")
    return "\n".join(lines)


class ProgressPrinter:
    """Progress on stderr: one redrawn line on a terminal, a periodic line otherwise."""

    def __init__(self) -> None:
        """Detect whether stderr is a terminal."""
        self.tty = sys.stderr.isatty()
        self.last_print = time.monotonic()
        self.drew = False

    def __call__(self, progress: Progress) -> None:
        """Show one snapshot."""
        if not self.tty and time.monotonic() - self.last_print < PIPE_PROGRESS_SECONDS:
            return
        self.last_print = time.monotonic()
        span = (progress.simulated_end - progress.simulated_from).total_seconds()
        done = (progress.simulated_time - progress.simulated_from).total_seconds()
        percent = f"{100 * min(1.0, done / span):3.0f}%" if span > 0 else "   -"
        line = (
            f"[{progress.wall_seconds:6.0f}s] {progress.simulated_time:%Y-%m-%d %H:%MZ} {percent}  "
            f"pushes {progress.pushes} (failed {progress.failed_pushes})  "
            f"delivered {progress.delivered_intervals}  pending {progress.pending_intervals}  "
            f"sensors done {progress.finished}/{progress.sensors}"
        )
        if self.tty:
            click.echo(f"\r{line}\x1b[K", nl=False, err=True)
            self.drew = True
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        """End the redrawn line."""
        if self.drew:
            click.echo("", err=True)


@click.command("simulate")
@click.argument("url", required=False)
@click.option(
    "--sensors",
    type=click.IntRange(min=1),
    help=f"Number of devices.  [default: 1; with --sites, {SENSORS_PER_SITE} per site]",
)
@click.option(
    "--sites",
    type=click.IntRange(min=1),
    help="Spread the sensors over sites 'Site 1'..'Site N' (zones 'Entrance 1', ...), each site in the "
    "next time zone of --timezone.",
)
@click.option(
    "--sensors-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Simulate the serials of this sensors file, with its labels; its sites, in order of first "
    "appearance, take the --timezone zones in turn.",
)
@click.option(
    "--write-sensors-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the sensors file labelling these sensors (for serve --sensors-file); without URL, only "
    "write it.",
)
@click.option(
    "--interval",
    type=click.Choice(["1", "5", "15"]),
    default="5",
    show_default=True,
    help="Send interval in minutes (measurements inside a push are one minute each).",
)
@click.option(
    "--flavour",
    type=click.Choice(["2d", "3d"]),
    default="3d",
    show_default=True,
    help="2d: AXIS People Counter (no adults); 3d: AXIS 3D People Counter (with adults).",
)
@click.option(
    "--token",
    envvar="AXIS_EXPORTER_SIMULATE_TOKEN",
    help="API token sent as 'Authorization: Bearer'. Env: AXIS_EXPORTER_SIMULATE_TOKEN.",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust only this CA (PEM), like a camera with CA-cert.pem uploaded; default: the system store.",
)
@click.option(
    "--duration",
    callback=duration_option,
    metavar="DURATION",
    default="1h",
    show_default=True,
    help="How long to run after connecting (wall time; simulated time with --fast).",
)
@click.option(
    "--fast",
    is_flag=True,
    help="Simulated clock, no sleeping. The period ends now unless --start is given.",
)
@click.option(
    "--start",
    callback=start_option,
    help="With --fast: simulated connect time (ISO 8601; UTC without offset).",
)
@click.option(
    "--backfill",
    callback=duration_option,
    metavar="DURATION",
    default="0",
    show_default=True,
    help="History the device holds when it connects (e.g. 90d); pushed first, as a reconnecting device does.",
)
@click.option(
    "--backfill-batch",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="At most this many minutes per push when catching up (0: all since the last 200 in one push).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Cap on pushes per second over all sensors (load tests).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Sensors pushing at the same time.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed: the same seed gives the same counts."
)
@click.option(
    "--timezone",
    "time_zones",
    multiple=True,
    help="IANA time zone of the sensors (repeat to mix; sensors take them in turn, or sites with --sites "
    f"and --sensors-file).  [default: {DEFAULT_TIME_ZONE}; with sites: {', '.join(SITE_TIME_ZONES)}]",
)
@click.option(
    "--name-prefix",
    help="Sensor names PREFIX1, PREFIX2, ... (default: axis-<serial>, as a device names itself).",
)
@click.option(
    "--serial-prefix",
    default=DEFAULT_SERIAL_PREFIX,
    show_default=True,
    help="Hex prefix of the 12-digit serials.",
)
@click.option(
    "--peak",
    type=click.FloatRange(min=0),
    default=TrafficProfile.peak_per_minute,
    show_default=True,
    help="People per minute at the busiest time of an average day.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for an answer.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Wall seconds between attempts after a failure in --fast mode and while draining.",
)
@click.option(
    "--drain",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to keep re-sending undelivered data after the period ends.",
)
@click.option("--no-test-connection", is_flag=True, help="Skip the initial 'Test connection' push.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary as JSON to this file.",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.pass_context
def simulate(
    ctx: click.Context,
    url: str | None,
    sensors: int | None,
    sites: int | None,
    sensors_file: Path | None,
    write_sensors_file: Path | None,
    interval: str,
    flavour: Flavour,
    token: str | None,
    cacert: Path | None,
    duration: dt.timedelta,
    fast: bool,
    start: dt.datetime | None,
    backfill: dt.timedelta,
    backfill_batch: int,
    rate: float | None,
    concurrency: int,
    seed: int,
    time_zones: tuple[str, ...],
    name_prefix: str | None,
    serial_prefix: str,
    peak: float,
    timeout: float,
    retry_delay: float,
    drain: float,
    no_test_connection: bool,
    summary_json: Path | None,
    quiet: bool,
) -> None:
    """Emulate Axis people counters pushing to URL; exit 1 if anything stayed undelivered."""
    if start is not None and not fast:
        raise click.UsageError("--start needs --fast (a real-time run starts now)")
    if url is None and write_sensors_file is None:
        raise click.UsageError("Missing argument 'URL' (only --write-sensors-file runs without one)")
    try:
        for zone in time_zones:
            check_time_zone(zone)
        identities = _identities(
            ctx,
            sensors=sensors,
            sites=sites,
            sensors_file=sensors_file,
            time_zones=time_zones,
            flavour=flavour,
            serial_prefix=serial_prefix,
            name_prefix=name_prefix,
        )
        if write_sensors_file is not None:
            _write_sensors_file(write_sensors_file, identities)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if url is None:
        return
    try:
        config = SimulationConfig(
            url=url,
            sensors=identities,
            interval_minutes=int(interval),
            duration=duration,
            backfill=backfill,
            fast=fast,
            start=start,
            batch_minutes=backfill_batch,
            seed=seed,
            traffic=TrafficProfile(peak_per_minute=peak),
            token=token,
            cacert=cacert,
            timeout=timeout,
            rate=rate,
            concurrency=concurrency,
            retry_delay=retry_delay,
            drain=drain,
            test_connection=not no_test_connection,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    printer = None if quiet else ProgressPrinter()
    try:
        summary = run_simulation(config, on_progress=printer)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        if printer is not None:
            printer.close()
    click.echo(format_summary(summary))
    if summary_json is not None:
        summary_json.write_bytes(summary.to_json() + b"\n")
    if not summary.complete:
        reasons = (
            [f"{summary.pending.intervals} interval(s) not delivered"] if summary.pending.intervals else []
        )
        failed_tests = [
            s.test_connection for s in summary.sensors if s.test_connection not in ("200", "not sent")
        ]
        if failed_tests:
            reasons.append(f"test connection failed for {len(failed_tests)} sensor(s) ({failed_tests[0]})")
        click.echo(f"error: {'; '.join(reasons)}", err=True)
        sys.exit(1)
