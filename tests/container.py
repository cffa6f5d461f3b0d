"""Run a compose service's command the way its container would, without a Docker engine.

What is emulated, each from the Dockerfile and the resolved docker-compose.yml (never restated here):

- the image: its directories with their owners and modes, its environment, user (uid:gid, no
  supplementary groups), working directory and command;
- the service: its environment, command or entrypoint, ``read_only`` root filesystem, and mounts:
  - a named volume takes the owner and mode of the image directory it is mounted on when it is new
    (Docker's copy-up), else root 0755;
  - a tmpfs is a real tmpfs, root-owned unless its options say uid=/gid=, with the image directory's
    mode unless its options say mode= (runc, libcontainer/rootfs_linux.go, mountToRootfs, "tmpfs":
    ``mode=<image dir mode>`` goes before the user's options);
  - a secret is the host file bind-mounted read-only at /run/secrets/<name>, with the host file's owner
    and mode (compose without swarm ignores uid/gid/mode);
  - a bind mount is the host path.

What is not emulated, and is said in the README: the image's Python (this machine's interpreter and
installed package stand in for it, mounted read-only at their own paths), the container's network
(service names and ports are mapped onto loopback ports by the caller), and the image build itself.

The emulation needs root (mount and user namespaces of its own are not used): a private mount namespace
(``unshare --mount``), a root directory built under a temporary folder, ``chroot``, then the image's
uid and gid. This file is both the library (``ContainerSpec``) and, run as a script, the init process
that sets the mounts up inside the namespace and then executes the command.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.processes import ChildProcess

# Host paths the chroot needs to run this machine's Python (mounted read-only at the same paths).
HOST_RUNTIME = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc")


@dataclass
class MountSpec:
    """One mount, ready for the init process: ``source`` is a host path (empty for tmpfs)."""

    type: str  # "bind", "volume", "tmpfs" or "secret"
    target: str
    source: str = ""
    read_only: bool = False
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class DirSpec:
    """An image directory: path, owner and mode."""

    path: str
    uid: int
    gid: int
    mode: int


@dataclass
class ContainerSpec:
    """Everything the init process needs, as JSON."""

    rootfs: str
    uid: int
    gid: int
    workdir: str
    command: list[str]
    environment: dict[str, str]
    image_dirs: list[DirSpec]
    mounts: list[MountSpec]
    read_only: bool = False
    host_paths: list[str] = field(default_factory=list)

    def popen(self, log_path: Path, spec_path: Path) -> ChildProcess:
        """Start the container's command; the returned process is that command (the init execs it)."""
        # Imported here: run as a script, this file is the container's init and needs only the stdlib.
        from exporter.processes import ChildProcess

        assert os.geteuid() == 0, "the container emulation needs root (mount namespace, chroot, setuid)"
        unshare = shutil.which("unshare")
        assert unshare, "unshare not found (Debian package util-linux)"
        spec_path.write_text(json.dumps(asdict(self)), encoding="utf-8")
        return ChildProcess(
            [unshare, "--mount", "--propagation", "private", sys.executable, __file__, str(spec_path)],
            log_path,
            name=f"container {self.command[0] if self.command else ''}".strip(),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )


def runtime_paths() -> list[str]:
    """Host paths the emulated container needs: the system, this Python, and the installed project."""
    # Where `axis-exporter` imports the package from (an editable install points into a checkout).
    installed = subprocess.run(
        [sys.executable, "-c", "import exporter; print(exporter.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
        timeout=60,
    ).stdout.strip()
    paths = [path for path in HOST_RUNTIME if os.path.lexists(path)]
    paths += sorted({sys.base_prefix, sys.prefix, str(Path(installed).parent.parent)})
    return paths


# --- the init process (runs as root inside the new mount namespace) ------------------------------
def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _inside(rootfs: Path, path: str) -> Path:
    return rootfs / path.lstrip("/")


def _make_dirs(rootfs: Path, path: str) -> Path:
    """Create ``path`` in the root filesystem; missing parents get root 0755, as Docker makes them."""
    target = _inside(rootfs, path)
    missing = [parent for parent in [target, *target.parents] if not parent.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o755)
    return target


def _host_runtime(rootfs: Path, path: str) -> None:
    if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems: keep the link
        link = _inside(rootfs, path)
        _make_dirs(rootfs, str(Path(path).parent))
        if not os.path.lexists(link):
            os.symlink(os.readlink(path), link)
        return
    target = _make_dirs(rootfs, path)
    _mount("--rbind", path, str(target))
    if path not in ("/dev", "/proc"):
        _mount("-o", "remount,bind,ro", str(target))


def _image_dirs(rootfs: Path, dirs: list[DirSpec]) -> dict[str, DirSpec]:
    for spec in sorted(dirs, key=lambda d: d.path):
        directory = _make_dirs(rootfs, spec.path)
        os.chown(directory, spec.uid, spec.gid)
        os.chmod(directory, spec.mode)
    return {spec.path: spec for spec in dirs}


def _apply_mount(rootfs: Path, mount: MountSpec, image_dirs: dict[str, DirSpec]) -> None:
    image_dir = image_dirs.get(mount.target)
    if mount.type == "secret":
        target = _inside(rootfs, mount.target)
        _make_dirs(rootfs, str(Path(mount.target).parent))
        target.touch()
        _mount("--bind", mount.source, str(target))
        _mount("-o", "remount,bind,ro", str(target))
        return
    target = _make_dirs(rootfs, mount.target)
    if mount.type == "tmpfs":
        options = {"mode": f"{image_dir.mode:o}"} if image_dir else {}
        options.update(mount.options)  # the user's options come after runc's mode=, so they win
        data = ",".join(f"{key}={value}" if value else key for key, value in options.items())
        _mount("-t", "tmpfs", "-o", data or "defaults", "tmpfs", str(target))
        return
    source = Path(mount.source)
    if mount.type == "volume" and not any(source.iterdir()) and not (source / ".initialised").exists():
        # A new volume: Docker copies the image directory's owner, mode (and content) up into it.
        owner = (image_dir.uid, image_dir.gid, image_dir.mode) if image_dir else (0, 0, 0o755)
        os.chown(source, owner[0], owner[1])
        os.chmod(source, owner[2])
    _mount("--bind", str(source), str(target))
    if mount.read_only:
        _mount("-o", "remount,bind,ro", str(target))


def init(spec: ContainerSpec) -> None:
    """Set the root filesystem up, drop to the image's user and execute the command."""
    rootfs = Path(spec.rootfs)
    rootfs.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(rootfs), str(rootfs))  # a mount of its own, so it can be made read-only
    image_dirs = _image_dirs(rootfs, [DirSpec(**d) if isinstance(d, dict) else d for d in spec.image_dirs])
    mounts = [MountSpec(**mount) if isinstance(mount, dict) else mount for mount in spec.mounts]
    # Outer paths before the paths inside them, whoever brings them: the runtime's /etc before a
    # service's /etc/axis-exporter/sensors, a service's tmpfs on /tmp before a checkout under /tmp (a CI
    # clone) that the runtime brings.
    steps: list[tuple[str, Callable[[], None]]] = [
        *((path, functools.partial(_host_runtime, rootfs, path)) for path in spec.host_paths),
        *((mount.target, functools.partial(_apply_mount, rootfs, mount, image_dirs)) for mount in mounts),
    ]
    for _, step in sorted(steps, key=lambda item: len(Path(item[0]).parts)):
        step()
    if spec.read_only:
        _mount("-o", "remount,bind,ro", str(rootfs))
    os.chroot(rootfs)
    os.chdir(spec.workdir)
    os.setgroups([])
    os.setgid(spec.gid)
    os.setuid(spec.uid)
    os.execvpe(spec.command[0], spec.command, spec.environment)


if __name__ == "__main__":
    init(ContainerSpec(**json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
