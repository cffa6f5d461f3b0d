"""docker-compose.yml, the Dockerfile and .env.example: valid, consistent with each other and with the
Grafana provisioning, and the image's health check works against a real receiver.

No Docker engine runs on the test machines, so `docker compose up` itself is not tested here: Debian's
docker-compose validates and resolves the file (`docker-compose config`) without an engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.certs import CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, issue_certificates
from exporter.config import load_config
from exporter.localdb import free_port
from tests.conftest import ExporterFactory

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SCRIPT = ROOT / "influxdb" / "initdb.d" / "create-tokens.sh"
PROVISIONING = ROOT / "grafana" / "provisioning"

EXPORTER_UID = 10001
GRAFANA_UID = 472  # the uid the grafana/grafana image runs as


def docker_compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run Debian's docker-compose on the repository's file, isolated from the caller's environment."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose not found: run ./scripts/setup (Debian package docker-compose)"
    command = [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False, env=clean_env
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` of the compose file with .env.example as the .env."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    shutil.copyfile(ENV_EXAMPLE, env_file)
    result = docker_compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = yaml.safe_load(result.stdout)
    return document


def service(resolved: dict[str, Any], name: str) -> dict[str, Any]:
    """One service of the resolved compose file."""
    found: dict[str, Any] = resolved["services"][name]
    return found


def mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """A service's volumes in long form, whichever syntax `docker-compose config` printed."""
    found: list[dict[str, Any]] = []
    for volume in svc.get("volumes", []):
        if isinstance(volume, dict):
            found.append(volume)
            continue
        source, target, *mode = volume.split(":")
        kind = "bind" if source.startswith(("/", ".")) else "volume"
        found.append({"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]})
    return found


def env_example() -> dict[str, str]:
    """KEY=value pairs of .env.example."""
    pairs: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_compose_file_validates_with_the_example_env(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == {"influxdb", "exporter", "prometheus", "grafana"}


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("", encoding="utf-8")
    result = docker_compose("config", env_file=empty)
    assert result.returncode != 0
    assert "INFLUXDB_ADMIN_PASSWORD in .env" in result.stderr


def test_env_example_defines_every_variable_the_compose_file_reads() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    assert used, "the compose file takes its settings from .env"
    assert used <= env_example().keys(), f"document in .env.example: {sorted(used - env_example().keys())}"
    secrets = {
        key: value for key, value in env_example().items() if "PASSWORD" in key or key.endswith("TOKEN")
    }
    assert secrets and all(value.startswith("change-me") for value in secrets.values()), secrets


def test_images_are_pinned_and_influxdb_is_2_7(resolved: dict[str, Any]) -> None:
    images = {name: svc.get("image", "") for name, svc in resolved["services"].items()}
    assert images["influxdb"] == "influxdb:2.7"
    for name in ("prometheus", "grafana"):
        tag = images[name].partition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name} image {images[name]} is not pinned"
    exporter = service(resolved, "exporter")
    assert Path(exporter["build"]["context"]) == ROOT
    assert not any(image.endswith(":latest") for image in images.values())


def test_only_the_receiver_and_grafana_are_published(resolved: dict[str, Any]) -> None:
    published = {
        name: sorted(int(port["target"]) for port in svc.get("ports", []))
        for name, svc in resolved["services"].items()
        if svc.get("ports")
    }
    assert published == {"exporter": [8080], "grafana": [3000]}


def test_healthchecks_and_start_order(resolved: dict[str, Any]) -> None:
    for name in ("influxdb", "prometheus", "grafana"):
        assert service(resolved, name)["healthcheck"]["test"], name
    assert "HEALTHCHECK" in DOCKERFILE.read_text(encoding="utf-8"), (
        "the exporter's health check is in its image"
    )
    assert service(resolved, "exporter")["depends_on"]["influxdb"]["condition"] == "service_healthy"
    grafana_deps = service(resolved, "grafana")["depends_on"]
    assert {grafana_deps[name]["condition"] for name in ("influxdb", "prometheus")} == {"service_healthy"}
    # InfluxDB is healthy only once the init script has written both tokens.
    influx_check = " ".join(service(resolved, "influxdb")["healthcheck"]["test"])
    assert "exporter.token" in influx_check and "grafana.token" in influx_check


def test_data_lives_in_named_volumes(resolved: dict[str, Any]) -> None:
    assert {
        "influxdb-data",
        "influxdb-tokens",
        "exporter-deadletter",
        "prometheus-data",
        "grafana-data",
    } <= set(resolved["volumes"])
    by_target = {
        name: {volume["target"]: volume for volume in mounts(svc)}
        for name, svc in resolved["services"].items()
    }
    assert by_target["influxdb"]["/var/lib/influxdb2"]["source"] == "influxdb-data"
    assert by_target["prometheus"]["/prometheus"]["source"] == "prometheus-data"
    assert by_target["grafana"]["/var/lib/grafana"]["source"] == "grafana-data"
    exporter = service(resolved, "exporter")["environment"]
    assert by_target["exporter"][exporter["AXIS_EXPORTER_DEADLETTER_DIR"]]["source"] == "exporter-deadletter"
    assert by_target["exporter"][exporter["PROMETHEUS_MULTIPROC_DIR"]]["type"] == "tmpfs"


def test_bind_mounts_exist_and_match_what_the_services_expect(resolved: dict[str, Any]) -> None:
    binds = {
        (name, volume["target"]): Path(volume["source"])
        for name, svc in resolved["services"].items()
        for volume in mounts(svc)
        if volume["type"] == "bind"
    }
    for (name, target), source in binds.items():
        assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
        assert source.resolve().is_relative_to(ROOT), source
    assert binds[("prometheus", "/etc/prometheus/alerts.yml")] == ROOT / "prometheus" / "alerts.yml"
    assert binds[("prometheus", "/etc/prometheus/prometheus.yml")] == ROOT / "prometheus" / "prometheus.yml"
    assert binds[("grafana", "/etc/grafana/provisioning")] == PROVISIONING
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "axis.yaml").read_text())["providers"][0]
    dashboards_dir = binds[("grafana", provider["options"]["path"])]
    assert dashboards_dir == ROOT / "grafana" / "dashboards"
    home = service(resolved, "grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (dashboards_dir / Path(home).name).is_file()
    assert binds[("influxdb", "/docker-entrypoint-initdb.d")] == INIT_SCRIPT.parent


def test_prometheus_scrapes_the_exporter_service_by_the_contracts_job_name(resolved: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = service(resolved, "exporter")["ports"][0]["target"]
    assert jobs["axis-exporter"]["static_configs"][0]["targets"] == [f"exporter:{port}"]
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yaml").read_text())[
        "datasources"
    ]
    urls = {source["type"]: source["url"] for source in datasources}
    assert urls == {"influxdb": "http://influxdb:8086", "prometheus": "http://prometheus:9090"}
    assert set(resolved["services"]) >= {"influxdb", "prometheus"}


def test_grafana_gets_the_environment_its_provisioning_reads(resolved: dict[str, Any]) -> None:
    environment = service(resolved, "grafana")["environment"]
    for path in PROVISIONING.rglob("*.yaml"):
        text = re.sub(r"\{\{.*?\}\}", "", path.read_text(encoding="utf-8"))  # alert templates are not env
        for name in re.findall(r"\$\{(\w+)\}", text):
            assert name in environment, f"{path.name} reads ${{{name}}}, which compose does not set"


def test_each_service_gets_its_own_influxdb_token(resolved: dict[str, Any]) -> None:
    script = INIT_SCRIPT.read_text(encoding="utf-8")
    assert os.access(INIT_SCRIPT, os.X_OK), "the influxdb image only runs executable *.sh init scripts"
    assert f"create_token exporter.token {EXPORTER_UID} " in script and "--write-bucket" in script
    assert f"create_token grafana.token {GRAFANA_UID} " in script and "--read-bucket" in script
    exporter_env = service(resolved, "exporter")["environment"]
    assert exporter_env["INFLUXDB_V2_TOKEN_FILE"] == "/var/lib/axis-tokens/exporter.token"
    assert "INFLUXDB_V2_TOKEN" not in exporter_env, "the exporter must not get the admin token"
    datasources = (PROVISIONING / "datasources" / "datasources.yaml").read_text()
    assert "$__file{/var/lib/axis-tokens/grafana.token}" in datasources
    for name in ("influxdb", "exporter", "grafana"):
        (tokens,) = [v for v in mounts(service(resolved, name)) if v.get("source") == "influxdb-tokens"]
        assert tokens["target"] == "/var/lib/axis-tokens"
        assert tokens.get("read_only", False) == (name != "influxdb"), name
    assert f"USER {EXPORTER_UID}:{EXPORTER_UID}" in DOCKERFILE.read_text(encoding="utf-8")
    result = subprocess.run(["bash", "-n", str(INIT_SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_exporters_compose_environment_is_a_valid_configuration(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    environment = dict(service(resolved, "exporter")["environment"])
    token_file = tmp_path / "exporter.token"
    token_file.write_text("generated-by-influxdb-init\n", encoding="utf-8")
    environment["INFLUXDB_V2_TOKEN_FILE"] = str(token_file)
    environment["AXIS_EXPORTER_DEADLETTER_DIR"] = str(tmp_path / "deadletter")
    environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    config = load_config(environment)
    assert config.influx is not None
    assert (config.influx.url, config.influx.bucket, config.influx.token) == (
        "http://influxdb:8086",
        "axis",
        "generated-by-influxdb-init",
    )
    assert config.auth_required, "compose requires camera tokens"


def test_dockerfile_builds_a_non_root_image_that_serves() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", text, re.MULTILINE)
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.MULTILINE)
    assert 'CMD ["axis-exporter", "serve"]' in text
    assert "EXPOSE 8080" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignored[ignored.index("*") :][:1] == ["*"], ".dockerignore starts from nothing (keeps .env out)"
    for needed in ("pyproject.toml", "README.md", "exporter"):
        assert (ROOT / needed).exists(), needed


def healthcheck_command() -> list[str]:
    """The exec form of the Dockerfile's HEALTHCHECK."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.MULTILINE)
    assert match, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    command: list[str] = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the image's health check command here, with the container's relevant variables."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        healthcheck_command(), env={**base, **env}, capture_output=True, text=True, timeout=30, check=False
    )


def test_image_healthcheck_passes_against_a_running_receiver(exporter_server: ExporterFactory) -> None:
    server = exporter_server(workers=1)
    result = run_healthcheck({"AXIS_EXPORTER_BIND": f"0.0.0.0:{server.port}"})
    assert result.returncode == 0, result.stderr


# The fixture's readiness probe does not verify our self-signed certificate; that is fine here.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_image_healthcheck_passes_over_https(exporter_server: ExporterFactory, tmp_path: Path) -> None:
    issued = issue_certificates(tmp_path / "certs", ["127.0.0.1"])
    server = exporter_server(
        "--certfile", str(issued.server_cert), "--keyfile", str(issued.server_key), workers=1, scheme="https"
    )
    env = {"AXIS_EXPORTER_BIND": f"0.0.0.0:{server.port}", "AXIS_EXPORTER_CERTFILE": str(issued.server_cert)}
    assert run_healthcheck(env).returncode == 0
    assert run_healthcheck({"AXIS_EXPORTER_BIND": f"0.0.0.0:{server.port}"}).returncode != 0


def test_image_healthcheck_fails_when_nothing_listens() -> None:
    assert run_healthcheck({"AXIS_EXPORTER_BIND": f"0.0.0.0:{free_port()}"}).returncode != 0


def test_https_instructions_match_the_certs_command_and_give_a_valid_prometheus_config(
    tmp_path: Path,
) -> None:
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    certs_dir = "/var/lib/axis-exporter/certs"
    assert f"--out {certs_dir}" in example and "--host exporter" in example
    assert f"# AXIS_EXPORTER_CERTFILE={certs_dir}/{SERVER_CERT_FILE}" in example
    assert f"# AXIS_EXPORTER_KEYFILE={certs_dir}/{SERVER_KEY_FILE}" in example
    assert f"chmod 0755 {certs_dir}" in DOCKERFILE.read_text(encoding="utf-8"), "the image creates it"
    # Uncommenting the https lines of prometheus.yml, as .env.example says, gives a valid config.
    issued = issue_certificates(tmp_path / "certs", ["127.0.0.1", "exporter"])
    assert issued.ca_cert.name == CA_CERT_FILE
    text = (ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    block = ["# scheme: https", "# tls_config:", f"#   ca_file: /etc/prometheus/axis-certs/{CA_CERT_FILE}"]
    for line in block:
        assert line in text, line
        text = text.replace(line, line.replace("# ", "", 1))
    text = text.replace(f"/etc/prometheus/axis-certs/{CA_CERT_FILE}", str(issued.ca_cert))
    text = text.replace("/etc/prometheus/alerts.yml", str(ROOT / "prometheus" / "alerts.yml"))
    config = tmp_path / "prometheus.yml"
    config.write_text(text, encoding="utf-8")
    parsed = yaml.safe_load(text)
    job = next(job for job in parsed["scrape_configs"] if job["job_name"] == "axis-exporter")
    assert job["scheme"] == "https" and job["tls_config"]["ca_file"] == str(issued.ca_cert)
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run ./scripts/setup"
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
