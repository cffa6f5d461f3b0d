"""docker-compose.yml, the Dockerfile, .env.example and the stack's scripts: valid, consistent, safe.

No Docker engine runs on the test machines. Debian's docker-compose validates and resolves the file
(`docker-compose config`) without one; tests/test_compose_emulation.py runs the services' commands as
their containers would, and tests/test_grafana_provisioning.py replays Grafana's start-up checks.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.certs import CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, issue_certificates
from exporter.config import load_config
from exporter.processes import free_port
from exporter.stackcheck import SECRETS, check_secrets
from tests.serveprocess import ExporterFactory
from tests.stack import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    ROOT,
    Service,
    dockerfile_image,
    env_text,
    env_values,
    published_ports,
    resolve,
    service,
)

INIT_SCRIPT = ROOT / "influxdb" / "initdb.d" / "create-tokens.sh"
STACK_INIT = ROOT / "scripts" / "stack-init"
PROVISIONING = ROOT / "grafana" / "provisioning"
GRAFANA_UID = 472  # the uid the grafana/grafana image runs as
LONG_RUNNING = ("influxdb", "exporter", "prometheus", "grafana")
# Exact releases: a tag that moves (2.9, latest, 11-ubuntu) would change what runs without a commit. And
# no older than the newest patch release with public evidence when this was pinned (README: Upgrading):
# an older one lacks security fixes (grafana 11.6.0 was the first 11.6 release, 15 followed it).
PINNED_AT_LEAST = {"influxdb": (2, 9, 1), "prometheus": (3, 13, 2), "grafana": (11, 6, 16)}
PYTHON_AT_LEAST = (3, 11, 16)


@pytest.fixture(scope="module", params=[False, True], ids=["http", "https"])
def resolved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` with .env.example as .env, as shipped and with its HTTPS lines enabled."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text(env_text(https=request.param), encoding="utf-8")
    return resolve(env_file)


def services(resolved: dict[str, Any]) -> list[Service]:
    """Every service of the resolved file."""
    return [service(resolved, name) for name in resolved["services"]]


def test_the_stack_has_its_services_and_https_reaches_the_receiver(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {"secrets-check", "certs", *LONG_RUNNING}
    environment = service(resolved, "exporter").environment
    if environment["AXIS_EXPORTER_CERTFILE"]:
        tls = service(resolved, "exporter").mount_at("/var/lib/axis-exporter/tls")
        assert environment["AXIS_EXPORTER_CERTFILE"] == f"{tls.target}/{SERVER_CERT_FILE}"
        assert environment["AXIS_EXPORTER_KEYFILE"] == f"{tls.target}/{SERVER_KEY_FILE}"


def test_env_example_defines_every_variable_the_compose_file_reads_and_holds_no_secret() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    example = env_values(text)
    documented = example.keys() | set(re.findall(r"^# (\w+)=", text, re.MULTILINE))
    assert used, "the compose file takes its settings from .env"
    assert used <= documented, f"document in .env.example: {sorted(used - documented)}"
    secretish = [key for key in example if re.search(r"PASSWORD|TOKEN|SECRET|WEBHOOK", key)]
    assert secretish == [], f"secrets belong in ./secrets, not .env: {secretish}"


def test_no_secret_in_any_container_environment(resolved: dict[str, Any]) -> None:
    for svc in services(resolved):
        for key, value in svc.environment.items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$__file\{/[^}]+\}", value), (
                    f"{svc.name}: {key} holds a value; give it a file (*_FILE or Grafana's $__file{{}})"
                )
            for match in re.findall(r"(?:_FILE=|\$__file\{)?(/run/secrets/[\w.-]+)", f"{key}={value}"):
                names = {mount.target for mount in svc.mounts if mount.type == "secret"}
                assert match in names, f"{svc.name}: {key} names {match}, which is not among its secrets"


def test_every_secret_is_a_file_under_secrets_that_git_ignores(resolved: dict[str, Any]) -> None:
    declared = resolved["secrets"]
    assert set(declared) == {rule.name for rule in SECRETS}, "secrets-check checks every secret"
    for name, secret in declared.items():
        assert Path(secret["file"]) == ROOT / "secrets" / name
    check = service(resolved, "secrets-check")
    assert {mount.source for mount in check.mounts if mount.type == "secret"} == set(declared)
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "secrets/camera-tokens"], cwd=ROOT, check=False, timeout=30
    )
    assert ignored.returncode == 0, ".gitignore must keep ./secrets out of git"


def test_every_service_waits_for_the_secrets_check(resolved: dict[str, Any]) -> None:
    def waits(name: str) -> bool:
        depends = resolved["services"][name].get("depends_on") or {}
        if depends.get("secrets-check", {}).get("condition") == "service_completed_successfully":
            return True
        return any(waits(other) for other in depends)

    for name in LONG_RUNNING:
        assert waits(name), f"{name} can start before the secrets are checked"
    check = service(resolved, "secrets-check")
    assert check.raw["command"][:2] == ["axis-exporter", "check-secrets"]
    assert check.raw.get("restart") in (None, "no"), "a one-off check must not be restarted"


def release(tag: str) -> tuple[int, ...]:
    """(major, minor, patch) of an exact release tag such as v3.13.2 or 11.6.16; () for anything else."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", tag)
    return tuple(int(part) for part in match.groups()) if match else ()


def test_images_are_pinned_to_exact_patched_releases(resolved: dict[str, Any]) -> None:
    for name, minimum in PINNED_AT_LEAST.items():
        image = resolved["services"][name]["image"]
        version = release(image.rpartition(":")[2])
        assert version, f"{name}: {image} is not an exact release"
        assert version >= minimum, f"{name}: {image} is older than the patched {minimum}"
    base = re.search(
        r"^FROM python:(3\.11\.\d+)-slim-(bookworm|trixie)$", DOCKERFILE.read_text(), re.MULTILINE
    )
    assert base, "pin the base image to a Python patch release and a Debian release"
    assert release(base.group(1)) >= PYTHON_AT_LEAST


def test_only_the_push_listener_and_grafana_are_published_and_the_admin_listener_on_loopback(
    resolved: dict[str, Any],
) -> None:
    """The admin listener (status page, per-sensor metrics) is plain HTTP: never beyond this host."""
    image = dockerfile_image()
    push_port = int(image.env["AXIS_EXPORTER_BIND"].rpartition(":")[2])
    admin_port = int(image.env["AXIS_EXPORTER_ADMIN_BIND"].rpartition(":")[2])
    everywhere = {
        name: [target for host, target in published_ports(svc) if not host]
        for name, svc in resolved["services"].items()
    }
    assert {name: ports for name, ports in everywhere.items() if ports} == {
        "exporter": [push_port],
        "grafana": [3000],
    }
    loopback = {
        (name, target, host)
        for name, svc in resolved["services"].items()
        for host, target in published_ports(svc)
        if host
    }
    assert loopback == {("exporter", admin_port, "127.0.0.1")}


def test_prometheus_scrapes_the_admin_listener_and_has_no_lifecycle_api(resolved: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "axis-exporter"]
    admin_port = dockerfile_image().env["AXIS_EXPORTER_ADMIN_BIND"].rpartition(":")[2]
    assert job["static_configs"] == [{"targets": [f"exporter:{admin_port}"]}]
    assert job.get("scheme", "http") == "http", "the admin listener is plain HTTP whatever the cameras use"
    command = service(resolved, "prometheus").raw["command"]
    assert not any("lifecycle" in argument for argument in command), "the lifecycle API stops Prometheus"


def test_the_ca_key_never_sits_on_a_volume_the_receiver_mounts(resolved: dict[str, Any]) -> None:
    certs, exporter = service(resolved, "certs"), service(resolved, "exporter")
    entrypoint = certs.raw["entrypoint"]
    ca_dir, out_dir = (entrypoint[entrypoint.index(flag) + 1] for flag in ("--ca-dir", "--out"))
    ca_volume = certs.mount_at(ca_dir).source
    assert ca_volume not in {mount.source for mount in exporter.mounts}
    tls = exporter.mount_at(out_dir)
    assert tls.source == certs.mount_at(out_dir).source and tls.read_only
    assert certs.raw.get("profiles"), "a tool run by hand, not started by `docker compose up`"


def test_every_service_rotates_its_logs(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        logging = svc.get("logging") or {}
        assert logging.get("options", {}).get("max-size"), f"{name} logs without a size limit"


def test_the_receiver_runs_read_only_without_privileges(resolved: dict[str, Any]) -> None:
    exporter = service(resolved, "exporter")
    assert exporter.raw.get("read_only") is True
    assert exporter.raw.get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in exporter.raw.get("security_opt", [])
    writable = {mount.target for mount in exporter.mounts if not mount.read_only}
    assert writable == {"/tmp", dockerfile_image().env["AXIS_EXPORTER_DEADLETTER_DIR"]}


def test_healthchecks_and_start_order(resolved: dict[str, Any]) -> None:
    for name in ("influxdb", "prometheus", "grafana"):
        assert service(resolved, name).raw["healthcheck"]["test"], name
    assert dockerfile_image().healthcheck, "the exporter's health check is in its image"
    assert service(resolved, "exporter").raw["depends_on"]["influxdb"]["condition"] == "service_healthy"
    grafana_deps = service(resolved, "grafana").raw["depends_on"]
    assert {grafana_deps[name]["condition"] for name in ("influxdb", "prometheus")} == {"service_healthy"}
    influx_check = " ".join(service(resolved, "influxdb").raw["healthcheck"]["test"])
    assert "exporter.token" in influx_check and "grafana.token" in influx_check


def test_data_lives_in_named_volumes(resolved: dict[str, Any]) -> None:
    assert {
        "influxdb-data",
        "influxdb-tokens",
        "exporter-deadletter",
        "prometheus-data",
        "grafana-data",
    } <= set(resolved["volumes"])
    assert service(resolved, "influxdb").mount_at("/var/lib/influxdb2").source == "influxdb-data"
    assert service(resolved, "prometheus").mount_at("/prometheus").source == "prometheus-data"
    assert service(resolved, "grafana").mount_at("/var/lib/grafana").source == "grafana-data"
    exporter = service(resolved, "exporter")
    deadletter = dockerfile_image().env["AXIS_EXPORTER_DEADLETTER_DIR"]
    assert exporter.mount_at(deadletter).source == "exporter-deadletter"


def test_bind_mounts_exist_and_match_what_the_services_expect(resolved: dict[str, Any]) -> None:
    binds = {
        (svc.name, mount.target): Path(mount.source)
        for svc in services(resolved)
        for mount in svc.mounts
        if mount.type == "bind"
    }
    stack_init = STACK_INIT.read_text(encoding="utf-8")
    for (name, target), source in binds.items():
        assert source.resolve().is_relative_to(ROOT), source
        if source == ROOT / "sensors":  # the user's sites: written by stack-init, not in the repository
            assert "mkdir -p sensors" in stack_init and "sensors/sensors.yml" in stack_init
            continue
        assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
    assert binds[("prometheus", "/etc/prometheus/alerts.yml")] == ROOT / "prometheus" / "alerts.yml"
    assert binds[("prometheus", "/etc/prometheus/prometheus.yml")] == ROOT / "prometheus" / "prometheus.yml"
    assert binds[("grafana", "/etc/grafana/provisioning")] == PROVISIONING
    assert binds[("influxdb", "/docker-entrypoint-initdb.d")] == INIT_SCRIPT.parent
    home = service(resolved, "grafana").environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert binds[("grafana", str(Path(home).parent))] == ROOT / "grafana" / "dashboards"
    assert (ROOT / "grafana" / "dashboards" / Path(home).name).is_file()


def test_each_service_gets_its_own_influxdb_token(resolved: dict[str, Any]) -> None:
    script = INIT_SCRIPT.read_text(encoding="utf-8")
    assert os.access(INIT_SCRIPT, os.X_OK), "the influxdb image only runs executable *.sh init scripts"
    image = dockerfile_image()
    calls = {line.split()[1]: line for line in script.splitlines() if line.startswith("create_token ")}
    assert calls["exporter.token"].startswith(f"create_token exporter.token {image.uid} ")
    # Writes, and reads today's counts for the status page.
    assert calls["exporter.token"].endswith("--write-bucket --read-bucket")
    assert calls["grafana.token"].startswith(f"create_token grafana.token {GRAFANA_UID} ")
    assert calls["grafana.token"].endswith("--read-bucket"), "Grafana only reads"
    exporter_env = service(resolved, "exporter").environment
    assert exporter_env["INFLUXDB_V2_TOKEN_FILE"] == "/var/lib/axis-tokens/exporter.token"
    assert "INFLUXDB_V2_TOKEN" not in exporter_env, "the exporter must not get the admin token"
    assert (
        "$__file{/var/lib/axis-tokens/grafana.token}"
        in (PROVISIONING / "datasources" / "datasources.yaml").read_text()
    )
    for name in ("influxdb", "exporter", "grafana"):
        tokens = service(resolved, name).mount_at("/var/lib/axis-tokens")
        assert tokens.source == "influxdb-tokens" and tokens.read_only == (name != "influxdb"), name


def test_the_exporters_compose_environment_is_a_valid_configuration(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    environment = {**dockerfile_image().env, **service(resolved, "exporter").environment}
    token_file = tmp_path / "exporter.token"
    token_file.write_text("generated-by-influxdb-init\n", encoding="utf-8")
    cameras = tmp_path / "camera-tokens"
    cameras.write_text("0123456789abcdef0123456789abcdef\n", encoding="utf-8")
    environment["INFLUXDB_V2_TOKEN_FILE"] = str(token_file)
    environment["AXIS_EXPORTER_TOKENS_FILE"] = str(cameras)
    config = load_config(environment)
    assert config.influx is not None
    assert (config.influx.url, config.influx.bucket, config.influx.token) == (
        "http://influxdb:8086",
        "axis",
        "generated-by-influxdb-init",
    )
    assert config.auth_required, "compose requires camera tokens"


def test_dockerfile_builds_a_non_root_image_that_serves() -> None:
    image = dockerfile_image()
    assert image.uid not in (0,) and image.gid != 0
    assert image.cmd == ["axis-exporter", "serve"]
    assert re.search(r"^RUN pip install \.", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert "PROMETHEUS_MULTIPROC_DIR" not in image.env, "serve makes a private one under /tmp"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignored[ignored.index("*") :][:1] == ["*"], ".dockerignore starts from nothing (keeps secrets out)"


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the image's health check command here, with the container's relevant variables."""
    command = dockerfile_image().healthcheck
    assert command[0] == "python"
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_image_healthcheck_asks_the_admin_listener(exporter_server: ExporterFactory) -> None:
    server = exporter_server(workers=1)
    result = run_healthcheck({"AXIS_EXPORTER_ADMIN_BIND": f"0.0.0.0:{server.admin_port}"})
    assert result.returncode == 0, result.stderr
    assert run_healthcheck({"AXIS_EXPORTER_ADMIN_BIND": f"127.0.0.1:{free_port()}"}).returncode != 0


def test_the_certs_instructions_match_the_certs_service(resolved: dict[str, Any], tmp_path: Path) -> None:
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert "docker compose run --rm certs --host" in example
    entrypoint = service(resolved, "certs").raw["entrypoint"]
    out_dir = entrypoint[entrypoint.index("--out") + 1]
    assert f"# AXIS_EXPORTER_CERTFILE={out_dir}/{SERVER_CERT_FILE}" in example
    assert f"# AXIS_EXPORTER_KEYFILE={out_dir}/{SERVER_KEY_FILE}" in example
    issued = issue_certificates(tmp_path / "tls", ["127.0.0.1"], ca_dir=tmp_path / "ca")
    assert issued.ca_key.parent == tmp_path / "ca" and issued.ca_cert_copy == tmp_path / "tls" / CA_CERT_FILE
    assert not (tmp_path / "tls" / "CA-key.pem").exists()


# --- the stack's scripts --------------------------------------------------------------------------
def shell_scripts() -> list[Path]:
    """Every shell script the repository tracks, found by its first line (not what tools put beside it,
    such as a virtual environment's activate scripts)."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    found = []
    for path in sorted(ROOT / name for name in tracked.split("\0") if name):
        if not path.is_file() or path.suffix in (".py", ".json", ".md", ".yml", ".yaml"):
            continue
        with path.open("rb") as handle:
            first = handle.readline()
        if re.match(rb"#!\s*/(usr/)?bin/(env )?(ba)?sh\b", first):
            found.append(path)
    return found


def test_shellcheck_finds_nothing_in_any_shell_script() -> None:
    scripts = shell_scripts()
    assert {ROOT / "scripts" / "stack-init", ROOT / "scripts" / "test", INIT_SCRIPT} <= set(scripts)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: run ./scripts/setup (Debian package shellcheck)"
    result = subprocess.run(
        [shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_init_writes_strong_secrets_once_and_replaces_placeholders(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(STACK_INIT, tmp_path / "scripts" / "stack-init")
    shutil.copy2(ENV_EXAMPLE, tmp_path / ".env.example")

    def stack_init() -> str:
        result = subprocess.run(
            [str(tmp_path / "scripts" / "stack-init")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    stack_init()
    secrets = tmp_path / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700, "only you may list or read the secrets"
    assert (tmp_path / ".env").read_text() == ENV_EXAMPLE.read_text()
    assert [finding for finding in check_secrets(secrets, "secrets") if finding.fatal] == []
    first = {path.name: path.read_text() for path in secrets.iterdir()}
    assert len({first[rule.name] for rule in SECRETS if rule.kind != "url"}) == len(SECRETS) - 1, "all differ"
    for path in secrets.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, "the containers read them as their own users"

    (secrets / "grafana-admin-password").write_text("change-me-grafana-password\n")
    output = stack_init()
    assert "kept     secrets/camera-tokens" in output and "wrote    secrets/grafana-admin-password" in output
    second = {path.name: path.read_text() for path in secrets.iterdir()}
    assert second["camera-tokens"] == first["camera-tokens"], "a set secret is never replaced"
    assert second["grafana-admin-password"] != "change-me-grafana-password\n"
    assert [finding for finding in check_secrets(secrets, "secrets") if finding.fatal] == []


def test_check_secrets_names_a_missing_file_and_the_fix(tmp_path: Path) -> None:
    findings = check_secrets(tmp_path, "secrets")
    assert all(finding.fatal for finding in findings) and len(findings) == len(SECRETS)
    assert (
        "secrets/influxdb-admin-password is missing (the InfluxDB admin password): run ./scripts/stack-init"
        in (findings[0].message)
    )
