"""Grafana starts with this repository's provisioning: its start-up checks replayed (grafana_startup.py).

Each known-bad case below is a defect this stack once had or easily gets; the check must report it, so a
reintroduced defect cannot pass unnoticed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.grafana_startup import Folders, GrafanaContainer, startup_errors
from tests.stack import ROOT, env_text, resolve, service

PROVISIONING = ROOT / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file resolved with .env.example's settings."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text(env_text(https=False), encoding="utf-8")
    return resolve(env_file)


def grafana_container(resolved: dict[str, Any], provisioning: Path | None = None) -> GrafanaContainer:
    """The grafana service's container: environment and mounts from compose, provisioning possibly a copy."""
    grafana = service(resolved, "grafana")
    mounts: dict[str, Path | None] = {}
    for mount in grafana.mounts:
        mounts[mount.target] = Path(mount.source) if mount.type == "bind" else None
    if provisioning is not None:
        mounts["/etc/grafana/provisioning"] = provisioning
    host = mounts["/etc/grafana/provisioning"]
    assert host is not None, "provisioning is a bind mount of the repository's folder"
    return GrafanaContainer(grafana.environment, mounts, host)


def test_grafana_starts_with_everything_provisioned_first_and_second_time(resolved: dict[str, Any]) -> None:
    grafana = grafana_container(resolved)
    folders = Folders()
    assert startup_errors(grafana, folders) == []
    assert list(folders.by_title) == ["Axis people counting"], "the rule and the dashboards share one folder"
    assert startup_errors(grafana, folders) == [], "a restart with grafana-data kept"


Mutation = Callable[[Path], None]


def _edit_yaml(relative: str, change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(provisioning: Path) -> None:
        path = provisioning / relative
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        change(document)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    return mutate


def _rule(document: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = document["groups"][0]["rules"][0]
    return rule


def _webhook_url(url: str) -> Mutation:
    def change(document: dict[str, Any]) -> None:
        document["contactPoints"][0]["receivers"][0]["settings"]["url"] = url

    return _edit_yaml("alerting/notifications.yaml", change)


def _every_datasource_default(document: dict[str, Any]) -> None:
    for source in document["datasources"]:
        source["isDefault"] = True


KNOWN_BAD: dict[str, tuple[Mutation, str]] = {
    # pkg/services/ngalert/models/alert_rule.go, SetDashboardAndPanelFromAnnotations: Grafana exits.
    "dashboard link without panel": (
        _edit_yaml("alerting/rules.yaml", lambda d: _rule(d)["annotations"].pop("__panelId__")),
        "both annotations __dashboardUid__ and __panelId__ must be specified",
    ),
    "panel id that is no number": (
        _edit_yaml("alerting/rules.yaml", lambda d: _rule(d)["annotations"].update(__panelId__="sensors")),
        "__panelId__ must be a valid integer Panel ID",
    ),
    # pkg/services/provisioning/dashboards/file_reader.go, getOrCreateFolder (grafana/grafana#87889).
    "dashboard folder asked for by a uid": (
        _edit_yaml(
            "dashboards/axis.yaml", lambda d: d["providers"][0].update(folderUid="axis-people-counting")
        ),
        "a folder with the same name already exists",
    ),
    # notification_policy_types.go / NotificationPolicyService.UpdatePolicyTree: Grafana exits.
    "policy routed to an unknown contact point": (
        _edit_yaml("alerting/notifications.yaml", lambda d: d["policies"][0].update(receiver="ops")),
        "receiver 'ops' does not exist",
    ),
    # values.go: $__file{} of a path that is not in the container stops Grafana.
    "a secret file that is not mounted": (
        _edit_yaml(
            "alerting/notifications.yaml",
            lambda d: d["contactPoints"][0]["receivers"][0]["settings"].update(
                url="$__file{/run/secrets/nope}"
            ),
        ),
        "$__file{/run/secrets/nope} is not on any mount of the grafana service",
    ),
    # values.go: an undefined ${VAR} silently becomes "": the webhook then has no URL.
    "a variable the service does not set": (
        _edit_yaml(
            "alerting/notifications.yaml",
            lambda d: d["contactPoints"][0]["receivers"][0]["settings"].update(
                url="${AXIS_ALERT_WEBHOOK_URL}"
            ),
        ),
        "$AXIS_ALERT_WEBHOOK_URL is not set in the grafana service's environment",
    ),
    # The old default: notifications to Grafana's own loopback fail, and nobody sees it.
    "alerts posted to Grafana's own loopback": (
        _webhook_url("http://127.0.0.1:9/set-AXIS_ALERT_WEBHOOK_URL"),
        "posts to Grafana's own loopback",
    ),
    # A datasource uid no provisioning file defines: the rule cannot be evaluated.
    "a rule query on an unknown datasource": (
        _edit_yaml("alerting/rules.yaml", lambda d: _rule(d)["data"][0].update(datasourceUid="prometheus")),
        "no datasource 'prometheus'",
    ),
    # ngalert/models/alert_rule.go, NoDataStateFromString.
    "an unknown no-data state": (
        _edit_yaml("alerting/rules.yaml", lambda d: _rule(d).update(noDataState="Ok")),
        "unknown NoData state option Ok",
    ),
    # datasources/config_reader.go: only one default per organisation.
    "two default datasources": (
        _edit_yaml("datasources/datasources.yaml", _every_datasource_default),
        "Only one datasource per organization",
    ),
}


@pytest.mark.parametrize("case", list(KNOWN_BAD))
def test_the_check_reports_each_known_defect(case: str, resolved: dict[str, Any], tmp_path: Path) -> None:
    mutate, expected = KNOWN_BAD[case]
    provisioning = tmp_path / "provisioning"
    shutil.copytree(PROVISIONING, provisioning)
    mutate(provisioning)
    errors = startup_errors(grafana_container(resolved, provisioning))
    assert any(expected in error for error in errors), f"{case}: expected {expected!r} in {errors}"


def test_the_admin_password_setting_reads_a_mounted_secret(resolved: dict[str, Any]) -> None:
    grafana = grafana_container(resolved)
    assert grafana.environment["GF_SECURITY_ADMIN_PASSWORD"] == "$__file{/run/secrets/grafana-admin-password}"
    grafana.environment["GF_SECURITY_ADMIN_PASSWORD"] = "$__file{/run/secrets/admin-password}"
    assert any("expanders.go" in error for error in startup_errors(grafana))
