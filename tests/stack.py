"""The docker compose stack as files: docker-compose.yml resolved by docker-compose, and the Dockerfile.

Tests read the stack's facts (environment, mounts, secrets, users, paths) from these two files rather
than restating them, so a change to either is what gets tested.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SECRETS_TARGET = "/run/secrets"  # where compose mounts a service's secrets (compose-spec, non-swarm)
# The HTTPS settings as .env.example shows them, commented out, for the user to enable.
_HTTPS_LINE = re.compile(r"^# (AXIS_EXPORTER_(?:CERTFILE|KEYFILE)=\S+)$", re.MULTILINE)


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


def env_text(https: bool) -> str:
    """.env.example as ./scripts/stack-init copies it, with the HTTPS lines uncommented if ``https``."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    if https:
        assert len(_HTTPS_LINE.findall(text)) == 2, ".env.example shows both HTTPS settings, commented"
        text = _HTTPS_LINE.sub(r"\1", text)
        # The commented lines come before the empty defaults, which would override them: drop those.
        text = re.sub(r"^AXIS_EXPORTER_(CERTFILE|KEYFILE)=$\n", "", text, flags=re.MULTILINE)
    return text


def env_values(text: str) -> dict[str, str]:
    """KEY=value pairs of an env file."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def resolve(env_file: Path) -> dict[str, Any]:
    """`docker-compose config` of the repository's file with ``env_file`` as its .env."""
    result = docker_compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = yaml.safe_load(result.stdout)
    return document


@dataclass(frozen=True)
class Mount:
    """One mount of a service, whatever syntax the compose file used."""

    type: str  # "volume", "bind", "tmpfs" or "secret"
    target: str
    source: str = ""
    read_only: bool = False
    options: dict[str, str] = field(default_factory=dict)  # tmpfs mount options (size, uid, mode...)


@dataclass(frozen=True)
class Service:
    """A resolved compose service, as its container sees it."""

    name: str
    raw: dict[str, Any]

    @property
    def environment(self) -> dict[str, str]:
        """The environment compose gives the container ($$ in the file is a literal $)."""
        env = self.raw.get("environment") or {}
        return {key: str(value).replace("$$", "$") for key, value in env.items()}

    @property
    def mounts(self) -> list[Mount]:
        """Volumes, binds, tmpfs and secrets, in long form."""
        found: list[Mount] = []
        for volume in self.raw.get("volumes", []):
            if isinstance(volume, dict):
                kind = volume.get("type", "volume")
                found.append(
                    Mount(kind, volume["target"], volume.get("source", ""), volume.get("read_only", False))
                )
                continue
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            found.append(Mount(kind, target, source, mode == ["ro"]))
        for entry in self.raw.get("tmpfs", []) or []:
            target, _, option_text = entry.partition(":")
            options = dict(option.partition("=")[::2] for option in option_text.split(",") if option)
            found.append(Mount("tmpfs", target, options=options))
        for secret in self.raw.get("secrets", []) or []:
            name = secret["source"] if isinstance(secret, dict) else secret
            target = (secret.get("target") if isinstance(secret, dict) else None) or name
            path = target if target.startswith("/") else f"{SECRETS_TARGET}/{target}"
            found.append(Mount("secret", path, name, read_only=True))
        return found

    def mount_at(self, target: str) -> Mount:
        """The mount whose target is ``target``."""
        (found,) = [mount for mount in self.mounts if mount.target == target]
        return found


def published_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """A resolved service's published ports as (host address, container port); "" is every address.

    docker-compose 1.x prints a port with a host address in the short syntax (HOST:PUBLISHED:TARGET/tcp)
    and the others in the long one; Compose v2 prints all in the long one, with ``host_ip``.
    """
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, str):
            parts = port.split("/")[0].split(":")
            ports.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
        else:
            ports.append((str(port.get("host_ip", "")), int(port["target"])))
    return ports


def service(resolved: dict[str, Any], name: str) -> Service:
    """One service of a resolved compose file."""
    return Service(name, resolved["services"][name])


@dataclass(frozen=True)
class ImageDir:
    """A directory the image has, with its owner and mode."""

    uid: int
    gid: int
    mode: int


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's final stage sets: user, environment, directories, workdir and command."""

    uid: int
    gid: int
    home: str
    env: dict[str, str]
    workdir: str
    cmd: list[str]
    dirs: dict[str, ImageDir]
    healthcheck: list[str]


# What every Debian-based image (python:*-slim-bookworm among them) has without the Dockerfile saying so.
BASE_IMAGE_DIRS = {"/tmp": ImageDir(0, 0, 0o1777), "/run": ImageDir(0, 0, 0o755)}


def dockerfile_image(path: Path = DOCKERFILE) -> Image:
    """Parse the instructions this project's Dockerfile uses (one stage, exec-form CMD and HEALTHCHECK)."""
    text = path.read_text(encoding="utf-8")
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    env: dict[str, str] = {}
    users: dict[str, tuple[int, str]] = {}
    dirs = dict(BASE_IMAGE_DIRS)
    uid = gid = 0
    workdir = "/"
    cmd: list[str] = []
    healthcheck: list[str] = []
    for line in lines:
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction == "WORKDIR":
            workdir = rest.strip()
        elif instruction == "USER":
            user, _, group = rest.strip().partition(":")
            uid = int(user) if user.isdigit() else users[user][0]
            gid = int(group) if group.isdigit() else uid
        elif instruction == "CMD":
            cmd = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            healthcheck = json.loads(rest.partition("CMD ")[2])
        elif instruction == "RUN":
            for command in re.split(r"\s*&&\s*", rest):
                words = shlex.split(command)
                if words[:1] == ["useradd"]:
                    users[words[-1]] = (
                        int(words[words.index("--uid") + 1]),
                        words[words.index("--home-dir") + 1],
                    )
                elif words[:2] == ["install", "-d"]:
                    owner = users[words[words.index("-o") + 1]][0]
                    group_id = users[words[words.index("-g") + 1]][0]
                    mode = int(words[words.index("-m") + 1], 8)
                    for directory in words[2:]:
                        if directory.startswith("/"):
                            dirs[directory] = ImageDir(owner, group_id, mode)
    home = next((home for user_id, home in users.values() if user_id == uid), "/")
    return Image(uid, gid, home, env, workdir, cmd, dirs, healthcheck)
