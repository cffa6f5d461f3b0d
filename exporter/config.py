"""Configuration: read once from an environment mapping into a frozen, typed object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # a 90-day one-minute backfill is about 35 MB
DEFAULT_DEADLETTER_MAX_BYTES = 1024 * 1024 * 1024
DEFAULT_WRITE_CHUNK_LINES = 10_000
DEFAULT_MAX_SENSORS = 2_000
DEFAULT_INFLUXDB_TIMEOUT_MS = 10_000
# A 90-day backfill (about 35 MB) over a 2 Mbit/s camera uplink takes about 140 s.
DEFAULT_CLIENT_TIMEOUT_SECONDS = 300
# People through one counted door in one interval (at most 15 minutes): a crowded entrance passes a few
# hundred a minute; more is a broken or forged count, and far less than an int64 sum could overflow.
DEFAULT_MAX_COUNT = 10_000
# How far the end of an interval may lie ahead of this receiver's clock (cameras keep NTP time).
DEFAULT_MAX_FUTURE_SKEW_SECONDS = 600
# Axis serials are the device's MAC address: 12 hexadecimal digits, upper-cased here.
DEFAULT_SERIAL_PATTERN = "[0-9A-F]{12}"
# A device keeps at most 90 days; 90 days of one-minute intervals are 129,600 measurements.
MAX_MEASUREMENTS_PER_PUSH = 150_000

# What example files and half-finished setups hold instead of a secret.
_PLACEHOLDER = re.compile(r"change[-_]?me|replace[-_]?me|placeholder|<[^>]*>", re.IGNORECASE)


def is_placeholder(secret: str) -> bool:
    """Whether ``secret`` is an example value (``change-me...``) rather than a real secret."""
    return bool(_PLACEHOLDER.search(secret))


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class DeviceToken:
    """A device API token, optionally bound to the serials it may push for (empty: any serial)."""

    token: str
    serials: frozenset[str] = frozenset()

    def allows(self, serial: str) -> bool:
        """Whether this token may push data for ``serial``."""
        return not self.serials or serial.upper() in self.serials


@dataclass(frozen=True)
class PushLimits:
    """What a push may hold, from what a real camera sends (README: Security)."""

    max_count: int = DEFAULT_MAX_COUNT
    max_future_skew_seconds: int = DEFAULT_MAX_FUTURE_SKEW_SECONDS
    serial_pattern: re.Pattern[str] = re.compile(DEFAULT_SERIAL_PATTERN)
    max_measurements: int = MAX_MEASUREMENTS_PER_PUSH

    def latest_interval_end(self, now: float) -> int:
        """The latest ``utcTo`` accepted at unix time ``now``."""
        return int(now) + self.max_future_skew_seconds


@dataclass(frozen=True)
class InfluxConfig:
    """Where and how to write to InfluxDB (names follow the influxdb-client library)."""

    url: str
    org: str
    token: str
    bucket: str
    timeout_ms: int = DEFAULT_INFLUXDB_TIMEOUT_MS

    @property
    def shown_url(self) -> str:
        """The URL for logs and answers: a user and password in it (1.8's basic auth) are left out."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """``url`` without the credentials of its user-info part, if it has any."""
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not separator or "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


@dataclass(frozen=True)
class Config:
    """Everything the receiver needs, validated."""

    influx: InfluxConfig | None
    device_tokens: tuple[DeviceToken, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_inflight_body_bytes: int = 4 * DEFAULT_MAX_BODY_BYTES
    deadletter_dir: Path = Path("deadletter")
    deadletter_max_bytes: int = DEFAULT_DEADLETTER_MAX_BYTES
    write_chunk_lines: int = DEFAULT_WRITE_CHUNK_LINES
    max_sensors: int = DEFAULT_MAX_SENSORS
    client_timeout_seconds: int = DEFAULT_CLIENT_TIMEOUT_SECONDS
    limits: PushLimits = PushLimits()
    log_level: str = "INFO"
    # The push URL cameras use, as the status page shows it (behind NAT or a proxy it cannot be guessed).
    public_url: str = ""
    # YAML file mapping serials to site, zone and further labels (exporter.sensorsfile).
    sensors_file: Path | None = None
    # Minutes after local midnight at which a sensor's counting day starts (venues open past midnight).
    day_start_minutes: int = 0
    prometheus_multiproc_dir: Path | None = None

    @property
    def auth_required(self) -> bool:
        """Whether pushes must carry a device token."""
        return bool(self.device_tokens)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """Read ``name`` or the file named by ``name_FILE`` (the Docker-secrets convention)."""
    file_var = f"{name}_FILE"
    if env.get(name) and env.get(file_var):
        raise ConfigError(f"{name} and {file_var} are both set: set only one of them")
    if env.get(file_var):
        path = Path(env[file_var])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_var}: cannot read {path}: {exc.strerror}") from exc
    value = env.get(name)
    return value.strip() if value else None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def _serial_pattern(env: Mapping[str, str]) -> re.Pattern[str]:
    raw = env.get("AXIS_EXPORTER_SERIAL_PATTERN", "").strip() or DEFAULT_SERIAL_PATTERN
    try:
        pattern = re.compile(raw)
    except re.error as exc:
        raise ConfigError(
            f"AXIS_EXPORTER_SERIAL_PATTERN={raw!r} is not a regular expression: {exc}"
        ) from None
    if pattern.fullmatch("") is not None:
        raise ConfigError(f"AXIS_EXPORTER_SERIAL_PATTERN={raw!r} accepts an empty serial")
    return pattern


def _day_start(env: Mapping[str, str]) -> int:
    """AXIS_EXPORTER_DAY_START, ``HH:MM`` from 00:00 to 12:00 in quarter hours, as minutes after midnight.

    Quarter hours: exporter.localday works a sensor's calendar out once per quarter hour of UTC.
    """
    raw = env.get("AXIS_EXPORTER_DAY_START", "").strip() or "00:00"
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", raw)
    minutes = int(match.group(1)) * 60 + int(match.group(2)) if match else -1
    if not 0 <= minutes <= 12 * 60 or minutes % 15:
        raise ConfigError(
            f"AXIS_EXPORTER_DAY_START={raw!r}: give the local time at which a counting day starts, "
            "HH:MM from 00:00 to 12:00 on a quarter hour (e.g. 04:00 for venues open past midnight)"
        )
    return minutes


def _limits(env: Mapping[str, str]) -> PushLimits:
    return PushLimits(
        max_count=_positive_int(env, "AXIS_EXPORTER_MAX_COUNT", DEFAULT_MAX_COUNT),
        max_future_skew_seconds=_positive_int(
            env, "AXIS_EXPORTER_MAX_FUTURE_SKEW", DEFAULT_MAX_FUTURE_SKEW_SECONDS
        ),
        serial_pattern=_serial_pattern(env),
    )


def parse_device_tokens(
    raw: str, source: str, serial_pattern: re.Pattern[str] | None = None
) -> tuple[DeviceToken, ...]:
    """Parse ``token[:SERIAL[|SERIAL...]]`` entries separated by commas or newlines.

    A token without serials may push for any device; ``t1:ACCC8E01|ACCC8E02`` only for those two. A
    line starting with ``#`` is a comment. Anything ambiguous is refused with the reason: a token twice
    (which binding would win?), a ``:`` with no serial after it (bound to nothing would mean any
    serial), a space inside a token (a comment after it?), a serial the serial pattern refuses.
    """
    pattern = serial_pattern or re.compile(DEFAULT_SERIAL_PATTERN)
    tokens: list[DeviceToken] = []
    seen: set[str] = set()
    for number, entry in enumerate(re.split(r"[,\n]", raw), start=1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        secret, colon, serial_list = entry.partition(":")
        secret = secret.strip()
        where = f"{source}, entry {number}"
        if not secret:
            raise ConfigError(f"{where}: an empty token before ':'")
        if is_placeholder(secret):
            raise ConfigError(f"{where}: still a placeholder token: put the cameras' real tokens there")
        if any(character.isspace() for character in secret):
            raise ConfigError(f"{where}: a token with a space in it (comments go on lines of their own)")
        if secret in seen:
            raise ConfigError(f"{where}: the same token appears twice; list it once with all its serials")
        serials = frozenset(s.strip().upper() for s in serial_list.split("|") if s.strip())
        if colon and not serials:
            raise ConfigError(
                f"{where}: ':' but no serial after it; drop the ':' to let the token push for any serial"
            )
        for serial in serials:
            if not serial.isascii() or not pattern.fullmatch(serial):
                raise ConfigError(
                    f"{where}: {serial!r} is not a serial (AXIS_EXPORTER_SERIAL_PATTERN {pattern.pattern})"
                )
        seen.add(secret)
        tokens.append(DeviceToken(secret, serials))
    if raw.strip() and not tokens:
        raise ConfigError(f"{source} is set but holds no token")
    return tuple(tokens)


def _influx(env: Mapping[str, str]) -> InfluxConfig | None:
    url = env.get("INFLUXDB_V2_URL", "").strip()
    if not url:
        return None
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"INFLUXDB_V2_URL={url!r} must look like http://host:8086")
    bucket = env.get("INFLUXDB_V2_BUCKET", "").strip()
    if not bucket:
        raise ConfigError("INFLUXDB_V2_BUCKET is not set: name the bucket (database) to write to")
    return InfluxConfig(
        url=url.rstrip("/"),
        org=env.get("INFLUXDB_V2_ORG", "").strip() or "-",
        token=_secret(env, "INFLUXDB_V2_TOKEN") or "",
        bucket=bucket,
        timeout_ms=_positive_int(env, "INFLUXDB_V2_TIMEOUT", DEFAULT_INFLUXDB_TIMEOUT_MS),
    )


def load_config(env: Mapping[str, str]) -> Config:
    """Build the configuration from an environment mapping; raise ConfigError naming the bad variable."""
    limits = _limits(env)
    max_body_bytes = _positive_int(env, "AXIS_EXPORTER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    tokens_raw = _secret(env, "AXIS_EXPORTER_TOKENS")
    source = "AXIS_EXPORTER_TOKENS_FILE" if env.get("AXIS_EXPORTER_TOKENS_FILE") else "AXIS_EXPORTER_TOKENS"
    tokens = parse_device_tokens(tokens_raw, source, limits.serial_pattern) if tokens_raw else ()
    log_level = env.get("AXIS_EXPORTER_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"AXIS_EXPORTER_LOG_LEVEL={log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    public_url = env.get("AXIS_EXPORTER_PUBLIC_URL", "").strip()
    if public_url and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", public_url):
        raise ConfigError(
            f"AXIS_EXPORTER_PUBLIC_URL={public_url!r}: give the URL cameras push to, such as "
            "https://counters.example.com/push (http or https, no credentials)"
        )
    sensors_file_raw = env.get("AXIS_EXPORTER_SENSORS_FILE", "").strip()
    return Config(
        influx=_influx(env),
        device_tokens=tokens,
        max_body_bytes=max_body_bytes,
        max_inflight_body_bytes=_positive_int(env, "AXIS_EXPORTER_MAX_INFLIGHT_BYTES", 4 * max_body_bytes),
        deadletter_dir=Path(env.get("AXIS_EXPORTER_DEADLETTER_DIR", "").strip() or "deadletter"),
        deadletter_max_bytes=_positive_int(
            env, "AXIS_EXPORTER_DEADLETTER_MAX_BYTES", DEFAULT_DEADLETTER_MAX_BYTES
        ),
        write_chunk_lines=_positive_int(env, "AXIS_EXPORTER_WRITE_CHUNK_LINES", DEFAULT_WRITE_CHUNK_LINES),
        max_sensors=_positive_int(env, "AXIS_EXPORTER_MAX_SENSORS", DEFAULT_MAX_SENSORS),
        client_timeout_seconds=_positive_int(
            env, "AXIS_EXPORTER_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT_SECONDS
        ),
        limits=limits,
        log_level=log_level,
        public_url=public_url,
        sensors_file=Path(sensors_file_raw) if sensors_file_raw else None,
        day_start_minutes=_day_start(env),
        prometheus_multiproc_dir=(
            Path(env["PROMETHEUS_MULTIPROC_DIR"]) if env.get("PROMETHEUS_MULTIPROC_DIR") else None
        ),
    )
