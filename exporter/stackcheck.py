"""``axis-exporter check-secrets``: the docker compose stack refuses to start on a weak or missing secret.

docker-compose.yml runs this once before InfluxDB, Grafana and the receiver start (they wait for it to
succeed). Each secret is a file in ./secrets, written by ./scripts/stack-init and mounted at
/run/secrets/<name>; the rules below are the reason a start fails, named with the file and the fix.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click

from exporter.config import ConfigError, is_placeholder, parse_device_tokens

MIN_SECRET_LENGTH = 16
# InfluxDB's own setup refuses passwords under 8 characters (tenant/service_user.go, IsPasswordStrong) and
# the container then exits on every start; ours is stricter, and says so before InfluxDB starts.
ALERT_SINK_PATH = "/alerts"
FIX = "run ./scripts/stack-init (it writes a strong random value), or write one yourself"


@dataclass(frozen=True)
class SecretRule:
    """What one secret file must hold."""

    name: str
    what: str
    min_length: int = MIN_SECRET_LENGTH
    kind: str = "secret"  # "secret", "camera-tokens" or "url"


SECRETS = (
    SecretRule("influxdb-admin-password", "the InfluxDB admin password"),
    SecretRule("influxdb-admin-token", "the InfluxDB admin (operator) token", min_length=32),
    SecretRule("grafana-admin-password", "the Grafana admin password"),
    SecretRule("camera-tokens", "the API token(s) the cameras send", kind="camera-tokens"),
    SecretRule("alert-webhook-url", "where Grafana sends alert notifications", min_length=0, kind="url"),
)


@dataclass(frozen=True)
class Finding:
    """One problem (``fatal``) or warning about one secret file."""

    fatal: bool
    message: str


def check_secret(rule: SecretRule, path: Path, shown_as: str) -> list[Finding]:
    """What is wrong with the secret in ``path`` (``shown_as`` is how the user knows the file)."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return [Finding(True, f"{shown_as} is missing ({rule.what}): {FIX}")]
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding(True, f"{shown_as} cannot be read ({exc}); it holds {rule.what}")]
    if not value:
        return [Finding(True, f"{shown_as} is empty; it holds {rule.what}: {FIX}")]
    if rule.kind == "url":
        return _check_url(value, shown_as)
    if rule.kind == "camera-tokens":
        try:
            tokens = parse_device_tokens(value, shown_as)
        except ConfigError as exc:
            return [Finding(True, f"{exc}: {FIX}")]
        values = [token.token for token in tokens]
    else:
        values = [value]
    findings = []
    for secret in values:
        if is_placeholder(secret):
            findings.append(Finding(True, f"{shown_as} still holds a placeholder ({rule.what}): {FIX}"))
        elif len(secret) < rule.min_length:
            findings.append(
                Finding(
                    True,
                    f"{shown_as}: {rule.what} has {len(secret)} characters, at least {rule.min_length} "
                    f"are needed: {FIX}",
                )
            )
    return findings


def _check_url(value: str, shown_as: str) -> list[Finding]:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [Finding(True, f"{shown_as} must hold an http(s) URL: the webhook Grafana sends alerts to")]
    if parts.path == ALERT_SINK_PATH and parts.hostname == "exporter":
        return [
            Finding(
                False,
                f"{shown_as} points at the receiver's own {ALERT_SINK_PATH}: alert notifications only reach "
                "the receiver's log and the 'Alert notifications without a destination' panel. Put your "
                "webhook URL (Slack, Teams, an on-call service...) in that file and restart Grafana",
            )
        ]
    return []


def check_secrets(directory: Path, shown_dir: str) -> list[Finding]:
    """Every finding for the stack's secrets in ``directory``."""
    findings: list[Finding] = []
    for rule in SECRETS:
        findings += check_secret(rule, directory / rule.name, f"{shown_dir}/{rule.name}")
    return findings


@click.command("check-secrets")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("/run/secrets"))
@click.option(
    "--shown-as",
    default="secrets",
    show_default=True,
    help="How messages name the folder (the host's ./secrets, which compose mounts at DIRECTORY).",
)
def check_secrets_command(directory: Path, shown_as: str) -> None:
    """Refuse missing, placeholder or short secrets of the docker compose stack (exit 1), naming each."""
    findings = check_secrets(directory, shown_as)
    for finding in findings:
        click.echo(f"{'error' if finding.fatal else 'warning'}: {finding.message}", err=True)
    if any(finding.fatal for finding in findings):
        click.echo("the stack does not start until these are fixed", err=True)
        sys.exit(1)
    click.echo(f"secrets: all {len(SECRETS)} are set")
