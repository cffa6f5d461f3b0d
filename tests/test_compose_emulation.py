"""The stack's services run the way their containers would, read from docker-compose.yml and the Dockerfile.

No Docker engine runs here. tests/container.py emulates a container (image directories and user,
volumes with Docker's copy-up, tmpfs as runc mounts it, secrets, read-only root) and runs the service's
own command in it. The only liberty taken: service names and container ports are mapped onto loopback
ports (``ADDRESSES``), since the containers' network is not emulated.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.influxd_bridge import LocalInflux
from exporter.processes import ChildProcess, ProcessFailed, free_port
from tests.container import ContainerSpec, DirSpec, MountSpec, runtime_paths
from tests.promserver import LocalPrometheus, sample_value
from tests.stack import ROOT, Image, Service, dockerfile_image, env_text, resolve, service
from tests.support import payload

INIT_SCRIPT = ROOT / "influxdb" / "initdb.d" / "create-tokens.sh"
STACK_INIT = ROOT / "scripts" / "stack-init"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder after ./scripts/stack-init: .env and ./secrets, as a user has them."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "scripts").mkdir()
    shutil.copy2(STACK_INIT, folder / "scripts" / "stack-init")
    shutil.copy2(ROOT / ".env.example", folder / ".env.example")
    result = subprocess.run(
        [str(folder / "scripts" / "stack-init")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@dataclass
class Emulation:
    """Volumes shared by the emulated containers of one stack, and the address mapping."""

    work: Path
    project: Path
    resolved: dict[str, Any]
    image: Image
    addresses: dict[str, str]
    started: list[ChildProcess]

    def volume(self, name: str) -> Path:
        """The host folder of named volume ``name`` (created empty, as docker volume create does)."""
        path = self.work / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spec(
        self, svc: Service, command: list[str], extra_env: dict[str, str] | None = None
    ) -> ContainerSpec:
        """The container of ``svc`` running ``command``, with the service's environment and mounts."""
        mounts = []
        for mount in svc.mounts:
            if mount.type == "volume":
                source = str(self.volume(mount.source))
            elif mount.type == "secret":
                source = str(self.project / "secrets" / mount.source)
            else:
                source = mount.source
                if mount.type == "bind" and Path(source).is_relative_to(ROOT):
                    # What stack-init made (./sensors) comes from the test's project, never from a
                    # developer's own checkout; the rest (./prometheus, ./grafana) from the repository.
                    made = self.project / Path(source).relative_to(ROOT)
                    source = str(made) if made.exists() else source
            mounts.append(MountSpec(mount.type, mount.target, source, mount.read_only, dict(mount.options)))
        environment = {**self.image.env, **svc.environment, **(extra_env or {})}
        environment = {key: self.map_addresses(value) for key, value in environment.items()}
        environment.setdefault("HOME", self.image.home)
        # The image's Python is stood in by this machine's: its bin folder comes first on PATH.
        environment["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
        return ContainerSpec(
            rootfs=str(self.work / f"rootfs-{svc.name}-{len(self.started)}"),
            uid=self.image.uid,
            gid=self.image.gid,
            workdir=self.image.workdir,
            command=command,
            environment=environment,
            image_dirs=[DirSpec(path, d.uid, d.gid, d.mode) for path, d in self.image.dirs.items()],
            mounts=mounts,
            read_only=bool(svc.raw.get("read_only")),
            host_paths=runtime_paths(),
        )

    def map_addresses(self, value: str) -> str:
        """A setting with service names and container ports pointed at loopback."""
        for container_address, loopback in self.addresses.items():
            value = value.replace(container_address, loopback)
        return value

    def run(self, svc: Service, command: list[str], log: Path) -> ChildProcess:
        """Start ``command`` in ``svc``'s emulated container."""
        process = self.spec(svc, command).popen(log, self.work / f"{log.stem}.json")
        self.started.append(process)
        return process


@pytest.fixture
def emulation(project: Path, tmp_path: Path, influx: LocalInflux) -> Iterator[Callable[[bool], Emulation]]:
    """Factory: the stack with .env.example's settings, plain HTTP or with its HTTPS lines enabled."""
    made: list[Emulation] = []

    def make(https: bool) -> Emulation:
        env_file = tmp_path / ".env"
        env_file.write_text(env_text(https), encoding="utf-8")
        push_port, admin_port = free_port(), free_port()
        influx_host = influx.url.removeprefix("http://")
        addresses = {
            "http://influxdb:8086": f"http://{influx_host}",
            "0.0.0.0:8080": f"127.0.0.1:{push_port}",
            "exporter:8080": f"127.0.0.1:{push_port}",
            "0.0.0.0:10464": f"127.0.0.1:{admin_port}",
            "exporter:10464": f"127.0.0.1:{admin_port}",
        }
        emulation = Emulation(tmp_path, project, resolve(env_file), dockerfile_image(), addresses, [])
        made.append(emulation)
        return emulation

    yield make
    for emulation in made:
        for process in emulation.started:
            process.stop(timeout=30)


def run_influxdb_init(emulation: Emulation, influx: LocalInflux) -> str:
    """influxdb's first start: the real init script, with an `influx` CLI that returns known tokens.

    The script runs as root, as the influxdb image runs /docker-entrypoint-initdb.d (before it steps
    down to the influxdb user); the entrypoint exports DOCKER_INFLUXDB_INIT_BUCKET_ID. Returns the
    bucket, created in the test's InfluxDB.
    """
    influxdb = service(emulation.resolved, "influxdb")
    tokens = emulation.volume(influxdb.mount_at("/var/lib/axis-tokens").source)
    os.chmod(tokens, 0o755)  # a new volume on a path the influxdb image does not have: root 0755
    stub = emulation.work / "stub-bin"
    stub.mkdir(exist_ok=True)
    (stub / "influx").write_text(
        "#!/bin/sh\n"
        'case "$*" in *--write-bucket*) t=' + influx.token + " ;; *) t=grafana-read-token ;; esac\n"
        'printf \'{"id": "1", "token": "%s", "status": "active"}\\n\' "$t"\n',
        encoding="utf-8",
    )
    (stub / "influx").chmod(0o755)
    environment = {
        **influxdb.environment,
        "PATH": f"{stub}:/usr/bin:/bin",
        "DOCKER_INFLUXDB_INIT_BUCKET_ID": "0123456789abcdef",
        "AXIS_TOKEN_DIR": str(tokens),
    }
    result = subprocess.run(
        ["bash", str(INIT_SCRIPT)], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bucket = environment["DOCKER_INFLUXDB_INIT_BUCKET"]
    influx.create_database(bucket)
    return bucket


def exporter_bucket(stack: Emulation) -> str:
    """The bucket the exporter service writes to."""
    return service(stack.resolved, "exporter").environment["INFLUXDB_V2_BUCKET"]


def wait_for_answer(url: str, process: ChildProcess, **kw: Any) -> None:
    """Until ``url`` answers 200; fail with the container's log if its process ends first."""
    try:
        process.wait_ready(lambda: requests.get(url, timeout=2, **kw).status_code == 200, 60, interval=0.2)
    except ProcessFailed as exc:
        raise AssertionError(f"{exc.reason} ({url}):\n{process.log()}") from None


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_the_exporter_service_runs_stores_a_push_and_is_scraped(
    emulation: Callable[[bool], Emulation], influx: LocalInflux, tmp_path: Path, https: bool
) -> None:
    stack = emulation(https)
    assert run_influxdb_init(stack, influx) == exporter_bucket(stack)
    exporter = service(stack.resolved, "exporter")
    scheme, verify = "http", None
    if https:
        certs = service(stack.resolved, "certs")
        command = [*certs.raw["entrypoint"], "--host", "127.0.0.1"]
        process = stack.run(certs, command, tmp_path / "certs.log")
        assert process.wait(timeout=60) == 0, (tmp_path / "certs.log").read_text()
        tls = stack.volume(exporter.mount_at("/var/lib/axis-exporter/tls").source)
        assert sorted(p.name for p in tls.iterdir()) == ["CA-cert.pem", "server-cert.pem", "server-key.pem"]
        assert stat.S_IMODE((tls / "server-key.pem").stat().st_mode) == 0o600
        scheme, verify = "https", str(tls / "CA-cert.pem")
    log = tmp_path / "exporter.log"
    process = stack.run(exporter, stack.image.cmd, log)
    push_url = stack.map_addresses(f"{scheme}://0.0.0.0:8080").replace("0.0.0.0", "127.0.0.1")
    admin_url = "http://" + stack.map_addresses("exporter:10464")
    wait_for_answer(f"{admin_url}/healthz", process)
    wait_for_answer(f"{push_url}/healthz", process, verify=verify)

    token = (stack.project / "secrets" / "camera-tokens").read_text(encoding="utf-8").strip()
    document = payload("sample-3d-object-data")
    serial = document["sensor"]["serial"] = f"ACCC8E{os.getpid() % 0x10000:04X}{int(https):02X}"
    response = requests.post(
        f"{push_url}/push",
        json=document,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        verify=verify,
    )
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{log.read_text()}"
    bucket = exporter.environment["INFLUXDB_V2_BUCKET"]
    assert len(influx.query(bucket, f"SELECT * FROM people_count WHERE serial = '{serial}'")) == 6
    assert requests.get(f"{push_url}/metrics", timeout=10, verify=verify).status_code == 404

    # The status page, as the container serves it: the sensor, and today's counts read with the
    # exporter's own token (create-tokens.sh gives it read access too).
    status = requests.get(f"{admin_url}/api/status", timeout=30).json()
    assert status["counts_message"] == "", status["counts_message"]
    assert [row["serial"] for row in status["sensors"] if row["state"] == "receiving"] == [serial]
    assert status["receiver"]["tls"] is https
    if https:
        assert status["camera"]["ca_download"] == "/ca.pem", "certs made the certificate: its CA is offered"

    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "axis-exporter"]
    job["static_configs"] = [
        {"targets": [stack.map_addresses(target) for target in group["targets"]]}
        for group in job["static_configs"]
    ]
    with LocalPrometheus(
        tmp_path / "prometheus", [job], rule_files=[ROOT / "prometheus" / "alerts.yml"]
    ) as prom:
        up = prom.wait_until('up{job="axis-exporter"}', lambda result: sample_value(result) == 1, timeout=30)
        assert sample_value(up) == 1, prom.log()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()


def test_the_emulated_tmpfs_is_root_owned_with_the_image_directorys_mode(
    emulation: Callable[[bool], Emulation], tmp_path: Path
) -> None:
    """The runtime fact behind the old crash loop, checked against the kernel: a tmpfs over an image
    directory owned by the image's user is root's, so that user cannot write in it."""
    stack = emulation(False)
    exporter = service(stack.resolved, "exporter")
    probe = [sys.executable, "-c", "import os, sys; os.makedirs('/var/lib/axis-exporter/probe/x')"]
    spec = stack.spec(exporter, probe)
    spec.mounts = [MountSpec("tmpfs", "/var/lib/axis-exporter/probe")]
    spec.image_dirs.append(DirSpec("/var/lib/axis-exporter/probe", stack.image.uid, stack.image.gid, 0o750))
    log = tmp_path / "probe.log"
    process = spec.popen(log, tmp_path / "probe.json")
    assert process.wait(timeout=60) != 0
    assert "PermissionError" in log.read_text(), log.read_text()


def test_secrets_check_passes_with_stack_init_and_names_what_is_wrong(
    emulation: Callable[[bool], Emulation], tmp_path: Path, project: Path
) -> None:
    stack = emulation(False)
    check = service(stack.resolved, "secrets-check")
    log = tmp_path / "check.log"
    assert stack.run(check, check.raw["command"], log).wait(timeout=60) == 0, log.read_text()
    assert "warning: secrets/alert-webhook-url points at the receiver's own /alerts" in log.read_text()

    weak = tmp_path / "weak-project"
    shutil.copytree(project / "secrets", weak / "secrets")
    (weak / "secrets" / "influxdb-admin-password").write_text("change-me-influxdb-password\n")
    (weak / "secrets" / "grafana-admin-password").write_text("short\n")
    (weak / "secrets" / "camera-tokens").write_text("change-me-camera-token:ACCC8EF3D92E\n")
    stack.project = weak
    log = tmp_path / "check-weak.log"
    assert stack.run(check, check.raw["command"], log).wait(timeout=60) == 1
    text = log.read_text()
    assert "secrets/influxdb-admin-password still holds a placeholder" in text
    assert "secrets/grafana-admin-password: the Grafana admin password has 5 characters, at least 16" in text
    assert "secrets/camera-tokens, entry 1: still a placeholder token" in text
    assert "run ./scripts/stack-init" in text
