"""Configuration: one typed object from the environment, errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.config import ConfigError, DeviceToken, load_config

INFLUX = {"INFLUXDB_V2_URL": "http://influxdb:8086/", "INFLUXDB_V2_BUCKET": "axis"}


def test_defaults_without_influxdb() -> None:
    config = load_config({})
    assert config.influx is None
    assert not config.auth_required
    assert config.max_body_bytes >= 35_000_000, "a 90-day backfill must fit by default"


def test_influxdb_settings_use_the_client_library_names(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    config = load_config({**INFLUX, "INFLUXDB_V2_ORG": "shop", "INFLUXDB_V2_TOKEN_FILE": str(token_file)})
    assert config.influx is not None
    assert (config.influx.url, config.influx.org, config.influx.token, config.influx.bucket) == (
        "http://influxdb:8086",
        "shop",
        "s3cret",
        "axis",
    )


def test_device_tokens_with_and_without_serials(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# one per line\nshared\ncam1:accc8e000001|ACCC8E000002\n")
    config = load_config({"AXIS_EXPORTER_TOKENS_FILE": str(tokens_file)})
    assert config.device_tokens == (
        DeviceToken("shared"),
        DeviceToken("cam1", frozenset({"ACCC8E000001", "ACCC8E000002"})),
    )
    shared, cam1 = config.device_tokens
    assert shared.allows("ANYTHING")
    assert cam1.allows("accc8e000001"), "serials compare case-insensitively"
    assert not cam1.allows("ACCC8E000003")
    assert load_config({"AXIS_EXPORTER_TOKENS": "a, b"}).device_tokens == (DeviceToken("a"), DeviceToken("b"))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"INFLUXDB_V2_URL": "influxdb:8086", "INFLUXDB_V2_BUCKET": "axis"}, "INFLUXDB_V2_URL"),
        ({"INFLUXDB_V2_URL": "http://influxdb:8086"}, "INFLUXDB_V2_BUCKET"),
        ({**INFLUX, "INFLUXDB_V2_TOKEN": "a", "INFLUXDB_V2_TOKEN_FILE": "/x"}, "INFLUXDB_V2_TOKEN and"),
        ({**INFLUX, "INFLUXDB_V2_TOKEN_FILE": "/nonexistent/token"}, "INFLUXDB_V2_TOKEN_FILE"),
        ({**INFLUX, "INFLUXDB_V2_TIMEOUT": "soon"}, "INFLUXDB_V2_TIMEOUT"),
        ({"AXIS_EXPORTER_MAX_BODY_BYTES": "0"}, "AXIS_EXPORTER_MAX_BODY_BYTES"),
        ({"AXIS_EXPORTER_DEADLETTER_MAX_BYTES": "-5"}, "AXIS_EXPORTER_DEADLETTER_MAX_BYTES"),
        ({"AXIS_EXPORTER_TOKENS": ":ACCC8E000001"}, "AXIS_EXPORTER_TOKENS"),
        ({"AXIS_EXPORTER_TOKENS": " , "}, "AXIS_EXPORTER_TOKENS"),
        ({"AXIS_EXPORTER_LOG_LEVEL": "loud"}, "AXIS_EXPORTER_LOG_LEVEL"),
        ({"AXIS_EXPORTER_PUBLIC_URL": "counters.example.com/push"}, "AXIS_EXPORTER_PUBLIC_URL"),
        (
            {"AXIS_EXPORTER_PUBLIC_URL": "https://user:pw@counters.example.com/push"},
            "AXIS_EXPORTER_PUBLIC_URL",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(env)
    assert str(excinfo.value).startswith(variable), f"error {excinfo.value!s} should start with {variable}"


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ("cam1:ACCC8E000001\ncam1:ACCC8E000002", "entry 2: the same token appears twice"),
        ("cam1:", "':' but no serial after it"),
        ("cam1 # the entrance", "a token with a space in it"),
        ("change-me-camera-token", "still a placeholder token"),
        ("cam1:SERIAL1", "'SERIAL1' is not a serial"),
    ],
)
def test_token_lists_that_mean_something_else_than_they_seem_are_refused(tokens: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)) as excinfo:
        load_config({"AXIS_EXPORTER_TOKENS": tokens})
    assert str(excinfo.value).startswith("AXIS_EXPORTER_TOKENS, entry ")


def test_the_public_url_is_what_the_status_page_shows() -> None:
    url = "https://counters.example.com:8443/push"
    assert load_config({"AXIS_EXPORTER_PUBLIC_URL": url}).public_url == url


def test_push_limits_come_from_the_environment() -> None:
    limits = load_config(
        {
            "AXIS_EXPORTER_MAX_COUNT": "500",
            "AXIS_EXPORTER_MAX_FUTURE_SKEW": "60",
            "AXIS_EXPORTER_SERIAL_PATTERN": "[0-9A-Z]{4,16}",
        }
    ).limits
    assert (limits.max_count, limits.max_future_skew_seconds, limits.serial_pattern.pattern) == (
        500,
        60,
        "[0-9A-Z]{4,16}",
    )
    assert load_config({"AXIS_EXPORTER_TOKENS": "t:cam42", "AXIS_EXPORTER_SERIAL_PATTERN": "[0-9A-Z]{4,16}"})
    for pattern, reason in (("[", "is not a regular expression"), (".*", "accepts an empty serial")):
        with pytest.raises(ConfigError, match=reason):
            load_config({"AXIS_EXPORTER_SERIAL_PATTERN": pattern})
