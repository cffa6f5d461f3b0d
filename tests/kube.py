"""The Kubernetes manifests of deploy/kubernetes, loaded the way `kubectl apply -k` would see them.

kubectl (and kustomize) cannot be installed here, so the kustomization is rendered by the few rules its
file uses: the listed resources, in order, with the kustomization's namespace set on every namespaced
object. Any other kustomization field is refused (tests/test_kubernetes.py), so nothing in it goes
unrendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBE_DIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = KUBE_DIR / "kustomization.yaml"
# The kustomization fields rendered below; kustomize's own names.
RENDERED_FIELDS = {"apiVersion", "kind", "namespace", "resources"}
CLUSTER_SCOPED = {"Namespace"}


@dataclass(frozen=True)
class Manifest:
    """One object of one file."""

    path: Path
    document: dict[str, Any]

    @property
    def kind(self) -> str:
        """The object's kind."""
        return str(self.document["kind"])

    @property
    def name(self) -> str:
        """metadata.name."""
        return str(self.document["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.name}: {self.kind}/{self.name}"


def kustomization() -> dict[str, Any]:
    """deploy/kubernetes/kustomization.yaml."""
    loaded: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    return loaded


def load_file(path: Path) -> list[Manifest]:
    """Every object of one YAML file (empty documents skipped)."""
    documents = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [Manifest(path, document) for document in documents if document]


def rendered() -> list[Manifest]:
    """What `kubectl apply -k deploy/kubernetes` applies: the resources with the namespace set."""
    config = kustomization()
    namespace = config.get("namespace")
    found: list[Manifest] = []
    for entry in config["resources"]:
        for manifest in load_file(KUBE_DIR / entry):
            if namespace and manifest.kind not in CLUSTER_SCOPED:
                manifest.document.setdefault("metadata", {})["namespace"] = namespace
            found.append(manifest)
    return found


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> dict[str, Any]:
    """The only object of ``kind`` (and ``name``); fails naming what was found instead."""
    matches = [m for m in manifests if m.kind == kind and (name is None or m.name == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[str(m) for m in matches]}"
    return matches[0].document


def container(manifests: list[Manifest]) -> dict[str, Any]:
    """The receiver's container in the StatefulSet."""
    (found,) = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = found
    return result


def ingress_settings(manifests: list[Manifest] | None = None) -> dict[str, str]:
    """The Ingress' ingress-nginx annotations without their prefix (proxy-body-size, ...)."""
    ingress = one(manifests if manifests is not None else rendered(), "Ingress")
    prefix = "nginx.ingress.kubernetes.io/"
    annotations: dict[str, str] = ingress["metadata"].get("annotations", {})
    return {key[len(prefix) :]: value for key, value in annotations.items() if key.startswith(prefix)}
