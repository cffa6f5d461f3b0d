"""deploy/kubernetes without a cluster: schemas, the security scan, generated files, and the app's facts.

Strict validation against the Kubernetes OpenAPI schemas uses kubernetes-validate (which ships them);
the Prometheus Operator's kinds are checked against the fields of their CRDs that the manifests use.
checkov runs from its own virtual environment (./scripts/setup makes it: its pinned dependencies
conflict with this project's test tools). The rest holds the manifests to what the receiver and its image
really do: ports, probes, variables, the user, paths and timeouts, read from the code and the Dockerfile.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

from deploy.kubernetes import generate
from grafana import build_dashboards
from tests.kube import (
    KUBE_DIR,
    RENDERED_FIELDS,
    ROOT,
    Manifest,
    container,
    ingress_settings,
    kustomization,
    load_file,
    one,
    rendered,
)
from tests.stack import dockerfile_image

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
# Kubernetes releases whose schemas every manifest must pass: from the oldest one whose API has every
# field used here (StatefulSet persistentVolumeClaimRetentionPolicy is GA in 1.32) to the newest one
# kubernetes-validate ships.
OLDEST_KUBERNETES = (1, 32)
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}

MANIFESTS = rendered()


def _minor(version: str) -> tuple[int, int]:
    major, minor, *_ = version.split(".")
    return int(major), int(minor)


VERSIONS = sorted(
    {f"{_minor(v)[0]}.{_minor(v)[1]}" for v in all_versions() if _minor(v) >= OLDEST_KUBERNETES}
)


def test_the_kustomization_lists_every_manifest_and_uses_only_fields_the_tests_render() -> None:
    config = kustomization()
    unknown = set(config) - RENDERED_FIELDS
    assert not unknown, (
        f"kustomization.yaml uses {sorted(unknown)}, which tests/kube.py does not render: "
        "render them there (and test them) before using them"
    )
    listed = set(config["resources"])
    on_disk = {path.name for path in KUBE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, (
        f"not in kustomization.yaml: {sorted(on_disk - listed)}; "
        f"listed but missing: {sorted(listed - on_disk)}"
    )


def test_every_object_names_its_namespace_so_that_kubectl_apply_f_works_too() -> None:
    namespace = kustomization()["namespace"]
    for path in sorted(KUBE_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for manifest in load_file(path):
            if manifest.kind == "Namespace":
                assert manifest.name == namespace, f"{manifest}: the kustomization's namespace is {namespace}"
                continue
            found = manifest.document["metadata"].get("namespace")
            assert found == namespace, f"{manifest}: metadata.namespace is {found!r}, expected {namespace!r}"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_builtin_object_validates_strictly_against_the_openapi_schema(version: str) -> None:
    builtin = [m for m in MANIFESTS if m.kind not in CUSTOM_KINDS]
    assert len(builtin) >= 10, f"only {len(builtin)} objects found: {[str(m) for m in builtin]}"
    failures = []
    for manifest in builtin:
        try:
            kubernetes_validate.validate(manifest.document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{manifest}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{manifest}: {exc.message}")
    assert not failures, f"Kubernetes {version} would refuse:\n" + "\n".join(failures)


# The fields of the Prometheus Operator's CRDs that the manifests use, with the CRDs' types, enums and
# required fields (prometheus-operator/prometheus-operator example/prometheus-operator-crd/
# monitoring.coreos.com_servicemonitors.yaml and monitoring.coreos.com_prometheusrules.yaml, v1).
# additionalProperties false: a field the CRD does not have fails here, as the API server's pruning would
# silently drop it.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$",
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRINGS},
    "additionalProperties": False,
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["endpoints", "selector"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchLabels": _STRINGS},
                    },
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                "interval": _DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _STRINGS,
                                            "annotations": _STRINGS,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.mark.parametrize("kind", sorted(CUSTOM_KINDS))
def test_prometheus_operator_objects_use_only_fields_of_their_crd(kind: str) -> None:
    document = one(MANIFESTS, kind)
    errors = sorted(
        jsonschema.Draft202012Validator(CRD_SCHEMAS[kind]).iter_errors(document), key=lambda e: list(e.path)
    )
    assert not errors, f"{kind}: " + "; ".join(
        f"{'.'.join(str(p) for p in error.path)}: {error.message}" for error in errors
    )


def test_the_crd_schemas_above_refuse_a_field_the_crd_does_not_have() -> None:
    document = json.loads(json.dumps(one(MANIFESTS, "ServiceMonitor")))
    document["spec"]["endpoints"][0]["scrapeInterval"] = "30s"  # the CRD's field is `interval`
    assert list(jsonschema.Draft202012Validator(CRD_SCHEMAS["ServiceMonitor"]).iter_errors(document))


def checkov_annotations() -> dict[str, str]:
    """Every `checkov.io/skipN: CHECK=reason` annotation, as {check: reason}."""
    skips: dict[str, str] = {}
    for manifest in MANIFESTS:
        for key, value in manifest.document["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                skips[check] = reason
    return skips


def test_checkov_finds_no_failure_and_every_exception_is_justified_where_it_is_made() -> None:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run ./scripts/setup, which makes checkov's venv"
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(KUBE_DIR),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.stdout.strip(), (
        f"checkov printed nothing (exit {result.returncode}): {result.stderr[-2000:]}"
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [
        f"{check['check_id']} {check['check_name']} in {check['file_path']} ({check['resource']})"
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failures (fix them, or justify a skip annotation next to the object):\n" + (
        "\n".join(failed)
    )
    assert summary["parsing_errors"] == 0, f"checkov could not parse some files: {summary}"
    assert summary["passed"] >= 40, f"checkov ran suspiciously few checks: {summary}"
    skipped = {check["check_id"] for check in report["results"]["skipped_checks"]}
    annotated = checkov_annotations()
    assert skipped == set(annotated), f"checkov skipped {sorted(skipped)}, the annotations say {annotated}"
    short = {check: reason for check, reason in annotated.items() if len(reason.split()) < 8}
    assert not short, f"a skipped check needs a reason of a sentence, not {short}"


def test_generated_prometheus_rule_and_dashboards_are_up_to_date() -> None:
    stale = [path.relative_to(ROOT).as_posix() for path in generate.iter_changes()]
    assert not stale, f"run `{generate.COMMAND}` and commit: {stale} are out of date"


def test_the_generator_check_mode_agrees_from_the_command_line() -> None:
    result = subprocess.run(
        ["python3", "deploy/kubernetes/generate.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_objects_carry_the_sources_unchanged() -> None:
    rule = one(MANIFESTS, "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == alerts["groups"], "the PrometheusRule's groups differ from alerts.yml"
    dashboards = {
        path.name: path.read_text(encoding="utf-8") for path in build_dashboards.DASHBOARD_DIR.glob("*.json")
    }
    carried: dict[str, str] = {}
    for manifest in MANIFESTS:
        labels = manifest.document["metadata"].get("labels", {})
        if manifest.kind == "ConfigMap" and labels.get("grafana_dashboard") == "1":
            carried.update(manifest.document["data"])
    assert carried == dashboards, (
        f"dashboard ConfigMaps hold {sorted(carried)}, grafana/dashboards has {sorted(dashboards)}"
    )


# --- the manifests against the receiver and its image ------------------------------------------------
def env_of(manifests: list[Manifest]) -> dict[str, str]:
    """The container's environment: the ConfigMap through envFrom, then env (which wins)."""
    spec = container(manifests)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        env.update(one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({item["name"]: item["value"] for item in spec.get("env", [])})
    return env


def port_of(manifests: list[Manifest], name: str) -> int:
    """containerPort of the named port."""
    (port,) = [p["containerPort"] for p in container(manifests)["ports"] if p["name"] == name]
    return int(port)


def test_every_variable_set_is_one_the_receiver_reads() -> None:
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "exporter").rglob("*.py"))
    unknown = [name for name in env_of(MANIFESTS) if f'"{name}' not in sources and f"'{name}" not in sources]
    # *_FILE variables are read as f"{name}_FILE" (exporter/config.py, _secret).
    unknown = [name for name in unknown if not (name.endswith("_FILE") and f'"{name[:-5]}' in sources)]
    assert not unknown, f"the pod sets variables the receiver never reads (typos?): {unknown}"


def test_ports_probes_and_services_match_what_serve_binds() -> None:
    env = env_of(MANIFESTS)
    assert env["AXIS_EXPORTER_BIND"].rpartition(":")[2] == str(port_of(MANIFESTS, "push"))
    assert env["AXIS_EXPORTER_ADMIN_BIND"].rpartition(":")[2] == str(port_of(MANIFESTS, "admin"))
    assert env["AXIS_EXPORTER_ADMIN_BIND"].startswith("0.0.0.0:"), "the kubelet cannot probe a loopback bind"
    spec = container(MANIFESTS)
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    pod_labels = one(MANIFESTS, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    for name, port in (("axis-exporter", "push"), ("axis-exporter-admin", "admin")):
        service = one(MANIFESTS, "Service", name)["spec"]
        assert service["selector"].items() <= pod_labels.items(), f"Service {name} selects no receiver pod"
        assert [p["targetPort"] for p in service["ports"]] == [port], (
            f"Service {name} targets {service['ports']}"
        )
    assert one(MANIFESTS, "Service", "axis-exporter-admin")["spec"]["clusterIP"] == "None"
    assert one(MANIFESTS, "StatefulSet")["spec"]["serviceName"] == "axis-exporter-admin"


def test_the_pod_runs_as_the_image_user_with_nothing_writable_but_its_volumes() -> None:
    image = dockerfile_image()
    statefulset = one(MANIFESTS, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    spec = container(MANIFESTS)
    security = spec["securityContext"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        image.uid,
        image.gid,
    )
    assert pod["securityContext"]["fsGroup"] == image.gid, "the volumes must belong to the image's group"
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    mounts = {mount["mountPath"]: mount for mount in spec["volumeMounts"]}
    writable = {path for path, mount in mounts.items() if not mount.get("readOnly")}
    deadletter = env_of(MANIFESTS)["AXIS_EXPORTER_DEADLETTER_DIR"]
    assert deadletter == image.env["AXIS_EXPORTER_DEADLETTER_DIR"], (
        "the dead-letter dir differs from the image's"
    )
    assert writable == {deadletter, "/tmp"}, f"writable mounts {sorted(writable)}"
    claims = [claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]]
    assert mounts[deadletter]["name"] in claims, "the dead-letter store must be on the pod's own volume"
    retention = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}, "dead letters must outlive the pod"


def test_secrets_are_files_the_file_variables_point_at() -> None:
    spec = container(MANIFESTS)
    pod = one(MANIFESTS, "StatefulSet")["spec"]["template"]["spec"]
    assert not any("valueFrom" in item for item in spec.get("env", [])), "no secret in the environment"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files: dict[str, str] = {}
    for mount in spec["volumeMounts"]:
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret:
            assert mount.get("readOnly") is True, f"secret mount {mount['mountPath']} must be read-only"
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = f"{secret['secretName']}/{item['key']}"
    env = env_of(MANIFESTS)
    for variable in ("INFLUXDB_V2_TOKEN_FILE", "AXIS_EXPORTER_TOKENS_FILE"):
        assert env[variable] in files, f"{variable}={env[variable]} is not a mounted secret file: {files}"
    assert "INFLUXDB_V2_TOKEN" not in env and "AXIS_EXPORTER_TOKENS" not in env


def _quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity such as 2Gi or 64m (ingress-nginx sizes: k, m, g)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 2**10, "m": 2**20, "g": 2**30}
    found = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|m|g)?", text)
    assert found, f"cannot read the size {text!r}"
    return int(found.group(1)) * units.get(found.group(2) or "", 1)


def test_sizes_agree_body_through_the_ingress_and_dead_letters_on_their_volume() -> None:
    env = env_of(MANIFESTS)
    ingress = ingress_settings(MANIFESTS)
    assert _quantity(ingress["proxy-body-size"]) >= int(env["AXIS_EXPORTER_MAX_BODY_BYTES"]), (
        "the Ingress would answer 413 to pushes the receiver accepts"
    )
    assert ingress["proxy-request-buffering"] == "on", "the grace period assumes the Ingress buffers bodies"
    claim = one(MANIFESTS, "StatefulSet")["spec"]["volumeClaimTemplates"][0]
    volume = _quantity(claim["spec"]["resources"]["requests"]["storage"])
    assert int(env["AXIS_EXPORTER_DEADLETTER_MAX_BYTES"]) * 2 <= volume, (
        "the dead-letter bound must fit twice"
    )
    rules = one(MANIFESTS, "Ingress")["spec"]["rules"]
    backends = {path["backend"]["service"]["name"] for rule in rules for path in rule["http"]["paths"]}
    assert backends == {"axis-exporter"}, f"the Ingress must send pushes to the push Service, not {backends}"
    assert one(MANIFESTS, "Ingress")["spec"]["tls"], "the example Ingress serves TLS"


# Measured by `python -m bench` (parts (d) and (g)): the pod's processes at rest, and how much a worker
# grows while it converts bodies, per byte of body (README "Performance", deploy/kubernetes/README.md).
POD_AT_REST_BYTES = 184 * 10**6
WORKER_GROWTH_PER_BODY_BYTE = 1.3


def test_the_memory_limit_holds_every_worker_at_its_body_budget() -> None:
    env = env_of(MANIFESTS)
    limits = container(MANIFESTS)["resources"]["limits"]
    budget = int(env["AXIS_EXPORTER_MAX_INFLIGHT_BYTES"])
    assert budget >= int(env["AXIS_EXPORTER_MAX_BODY_BYTES"]), "a worker could not take the largest push"
    worst = POD_AT_REST_BYTES + int(env["AXIS_EXPORTER_WORKERS"]) * WORKER_GROWTH_PER_BODY_BYTE * budget
    assert _quantity(limits["memory"]) > worst, (
        f"memory limit {limits['memory']} < {worst / 2**20:.0f} MiB, what the workers may hold: the pod "
        "would be OOM-killed before its body budget answers 503"
    )
    assert limits["cpu"] == env["AXIS_EXPORTER_WORKERS"], "each worker uses at most one core"


def test_the_grace_period_covers_the_pre_stop_pause_and_gunicorns_graceful_timeout() -> None:
    source = (ROOT / "exporter" / "server.py").read_text(encoding="utf-8")
    found = re.search(r'"graceful_timeout":\s*(\d+)', source)
    assert found, (
        "exporter/server.py no longer sets gunicorn's graceful_timeout as a literal: update this test"
    )
    graceful = int(found.group(1))
    pod = one(MANIFESTS, "StatefulSet")["spec"]["template"]["spec"]
    command = container(MANIFESTS)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop is {command}"
    pause = int(command[1])
    assert pause >= 5, "the preStop pause must let endpoints and the Ingress drop the pod first"
    assert pod["terminationGracePeriodSeconds"] >= pause + graceful + 5, (
        f"grace {pod['terminationGracePeriodSeconds']} s < preStop {pause} s + gunicorn {graceful} s + 5 s"
    )


def test_the_admin_port_is_open_to_the_monitoring_namespace_only() -> None:
    policy = one(MANIFESTS, "NetworkPolicy")["spec"]
    pod_labels = one(MANIFESTS, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    by_port: dict[str, list[Any]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).append(rule.get("from"))
    assert by_port["push"] == [None], "pushes come from the Ingress controller, wherever it runs"
    assert by_port["admin"] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    ]


def test_prometheus_scrapes_the_admin_service_under_the_job_the_alerts_select() -> None:
    monitor = one(MANIFESTS, "ServiceMonitor")["spec"]
    (service,) = [
        m.document
        for m in MANIFESTS
        if m.kind == "Service"
        and monitor["selector"]["matchLabels"].items() <= m.document["metadata"]["labels"].items()
    ]
    assert [p["name"] for p in service["spec"]["ports"]] == [monitor["endpoints"][0]["port"]]
    # The job is the Service's jobLabel value, else the Service's name (the CRD's jobLabel description).
    job = service["metadata"]["labels"].get(monitor.get("jobLabel", ""), service["metadata"]["name"])
    assert job == build_dashboards.JOB
    alerts = (ROOT / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    assert set(re.findall(r'job="([^"]+)"', alerts)) == {job}, "alerts.yml selects another job"


def test_autoscaler_and_disruption_budget_act_on_the_receivers() -> None:
    statefulset = one(MANIFESTS, "StatefulSet")
    assert "replicas" not in statefulset["spec"], "the HorizontalPodAutoscaler owns replicas"
    target = one(MANIFESTS, "HorizontalPodAutoscaler")["spec"]
    assert target["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "axis-exporter",
    }
    assert target["minReplicas"] >= 2
    assert "cpu" in container(MANIFESTS)["resources"]["requests"], "CPU utilisation needs a CPU request"
    budget = one(MANIFESTS, "PodDisruptionBudget")["spec"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget.get("maxUnavailable") == 1


def test_each_object_fits_kubectls_last_applied_annotation() -> None:
    # Client-side `kubectl apply` keeps each object as JSON in an annotation, and the API server refuses an
    # object whose annotations exceed 256 KiB (kubernetes/apimachinery pkg/api/validation/objectmeta.go,
    # TotalAnnotationSizeLimitB): a large dashboard ConfigMap would need server-side apply.
    limit = 256 * 1024
    for manifest in MANIFESTS:
        size = len(json.dumps(manifest.document, separators=(",", ":")))
        assert size < limit * 0.8, f"{manifest} is {size} bytes of JSON, near kubectl apply's {limit}"


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = one(MANIFESTS, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_manifest_paths_named_in_comments_exist_in_the_repository() -> None:
    # Comments point readers at files of this repository; keep them true.
    for path in sorted(KUBE_DIR.glob("*.yaml")):
        for name in re.findall(
            r"\b((?:exporter|tests|grafana|prometheus)/[\w./-]+\.(?:py|yml|json))", path.read_text()
        ):
            assert (ROOT / name).exists() or "*" in name, f"{path.name} names {name}, which does not exist"
    assert Path(generate.__file__).resolve().parent == KUBE_DIR
