"""Structure of the provisioned Grafana files: dashboards, data sources, dashboard provider, alerting."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROVISIONING = GRAFANA / "provisioning"
PROVISIONING_FILES = sorted(PROVISIONING.rglob("*.yaml")) + sorted(PROVISIONING.rglob("*.yml"))

# Data source uids Grafana itself provides: server-side expressions and the built-in annotations.
BUILT_IN_UIDS = {"__expr__": "__expr__", "-- Grafana --": "grafana", "grafana": "grafana"}
# Variables Grafana defines itself (https://grafana.com/docs/grafana/latest/dashboards/variables/).
GRAFANA_VARIABLES = {
    "timeFilter",
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__range",
    "__range_s",
    "__from",
    "__to",
    "__all",
}
VARIABLE_REF = re.compile(r"\$(?:\{(\w+)(?::[^}]*)?\}|(\w+))")
REQUIRED_KEYS = {"uid", "title", "schemaVersion", "version", "panels", "templating", "annotations", "time"}
EXPORT_LEFTOVERS = {"__inputs", "__requires", "__elements", "id", "gnetId"}


def load_yaml(path: Path) -> dict[str, Any]:
    """A provisioning file as a mapping."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    return document


def load_dashboard(path: Path) -> dict[str, Any]:
    """A dashboard file as a mapping."""
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path} is not a JSON object"
    return document


def provisioned_datasources() -> dict[str, str]:
    """uid -> plugin type of every provisioned data source."""
    found: dict[str, str] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        for source in load_yaml(path).get("datasources", []):
            assert source["uid"] not in found, f"data source uid {source['uid']} provisioned twice"
            found[source["uid"]] = source["type"]
    return found


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels including those nested in rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def datasource_refs(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, data source reference) for panels, their targets, variables and annotations."""
    for panel in all_panels(dashboard["panels"]):
        if "datasource" in panel:
            yield f"panel {panel['title']!r}", panel["datasource"]
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["datasource"]
    for variable in dashboard["templating"]["list"]:
        if "datasource" in variable:
            yield f"variable {variable['name']}", variable["datasource"]
    for annotation in dashboard["annotations"]["list"]:
        yield f"annotation {annotation['name']!r}", annotation["datasource"]


def resolve_uid(dashboard: dict[str, Any], uid: str) -> str:
    """The uid a reference ends up with: ``${var}`` resolves to that data source variable's default."""
    match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
    if match is None:
        return uid
    name = match.group(1) or match.group(2)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert name in variables, f"data source variable ${name} is not defined"
    variable = variables[name]
    assert variable["type"] == "datasource", f"${name} is used as a data source but is a {variable['type']}"
    value = variable["current"]["value"]
    assert isinstance(value, str)
    return value


def queries_of(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, query text) of every InfluxQL and PromQL query in the dashboard (not expressions)."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            for key in ("query", "expr"):
                if key in target:
                    yield f"panel {panel['title']!r} target {target['refId']}", target[key]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"]


def test_there_are_dashboards_and_provisioning_files() -> None:
    names = {path.name for path in DASHBOARDS}
    assert {"people-counting.json", "receiver-health.json"} <= names
    provisioned = {path.relative_to(PROVISIONING).as_posix() for path in PROVISIONING_FILES}
    assert {
        "datasources/datasources.yaml",
        "dashboards/axis.yaml",
        "alerting/rules.yaml",
        "alerting/notifications.yaml",
    } <= provisioned


@pytest.mark.parametrize("path", PROVISIONING_FILES, ids=lambda p: p.relative_to(PROVISIONING).as_posix())
def test_provisioning_file_parses_with_api_version_1(path: Path) -> None:
    assert load_yaml(path)["apiVersion"] == 1


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_has_required_keys_and_no_export_leftovers(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard.keys() >= REQUIRED_KEYS, f"missing {REQUIRED_KEYS - dashboard.keys()}"
    assert not EXPORT_LEFTOVERS & dashboard.keys(), f"export leftovers {EXPORT_LEFTOVERS & dashboard.keys()}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]), dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["title"].strip()
    assert dashboard["time"]["from"] and dashboard["time"]["to"]
    assert "axis-exporter" in dashboard["tags"], "the dashboards link to each other through this tag"


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [load_dashboard(path) for path in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_and_fit_the_grid_without_overlap(path: Path) -> None:
    panels = list(all_panels(load_dashboard(path)["panels"]))
    assert panels
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(set(ids)) == len(ids), f"duplicate panel ids {ids}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert panel["type"] and panel["title"].strip(), panel
        pos = panel["gridPos"]
        x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0, f"{panel['title']}: {pos}"
        assert x + w <= 24, f"{panel['title']} is wider than the 24-column grid: {pos}"
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            assert cell not in cells, f"{panel['title']!r} overlaps {cells[cell]!r} at {cell}"
            cells[cell] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_reference_resolves_to_a_provisioned_datasource(path: Path) -> None:
    dashboard = load_dashboard(path)
    provisioned = provisioned_datasources()
    refs = list(datasource_refs(dashboard))
    assert refs
    for where, ref in refs:
        uid = resolve_uid(dashboard, ref["uid"])
        if uid in BUILT_IN_UIDS:
            assert ref["type"] in {BUILT_IN_UIDS[uid], "datasource"}, f"{where}: {ref}"
            continue
        assert uid in provisioned, f"{where} uses data source {uid!r}, not one of {sorted(provisioned)}"
        assert ref["type"] == provisioned[uid], f"{where}: type {ref['type']} but {uid} is {provisioned[uid]}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "datasource":
            uid = variable["current"]["value"]
            assert provisioned.get(uid) == variable["query"], f"${variable['name']} defaults to {uid}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_targets_are_complete_and_refer_to_each_other_correctly(path: Path) -> None:
    dashboard = load_dashboard(path)
    for panel in all_panels(dashboard["panels"]):
        targets = panel.get("targets", [])
        if panel["type"] == "row":
            continue
        assert targets, f"{panel['title']} has no query"
        refs = [target["refId"] for target in targets]
        assert len(set(refs)) == len(refs), f"{panel['title']}: duplicate refIds {refs}"
        for target in targets:
            kind = target["datasource"]["type"]
            if kind == "influxdb":
                assert target["rawQuery"] is True and target["query"].strip(), target
                assert "FROM" in target["query"], target
            elif kind == "prometheus":
                assert target["expr"].strip(), target
            elif kind == "__expr__":
                used = set(re.findall(r"\$(\w+)", target["expression"]))
                assert used and used <= set(refs) - {target["refId"]}, f"{panel['title']}: {target}"
            else:
                raise AssertionError(f"{panel['title']}: unexpected data source type {kind}")
        visible = [t for t in targets if not t.get("hide")]
        assert visible, f"{panel['title']}: every query is hidden"
        for transformation in panel.get("transformations", []):
            matcher = transformation.get("filter")
            if matcher is not None:
                assert matcher["id"] == "byRefId" and matcher["options"] in refs, transformation


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_queries_use_only_defined_variables(path: Path) -> None:
    dashboard = load_dashboard(path)
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    queries = list(queries_of(dashboard))
    assert queries
    for where, query in queries:
        used = {name for pair in VARIABLE_REF.findall(query) for name in pair if name}
        unknown = used - defined - GRAFANA_VARIABLES
        assert not unknown, f"{where} uses undefined variables {unknown}: {query}"


def test_variables_have_safe_defaults() -> None:
    for path in DASHBOARDS:
        for variable in load_dashboard(path)["templating"]["list"]:
            assert variable["name"] and variable.get("label"), variable
            if variable.get("multi") or variable.get("includeAll"):
                # An "All" that matches everything without listing every sensor in the query.
                assert variable.get("allValue") == ".*", variable


def test_dashboard_provider_loads_the_dashboard_folder_into_the_rules_folder() -> None:
    providers = load_yaml(PROVISIONING / "dashboards" / "axis.yaml")["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    # By title only: the alert rule, provisioned first, creates the folder with a uid of Grafana's choice.
    assert provider["folder"] and "folderUid" not in provider
    assert {group["folder"] for group in load_yaml(PROVISIONING / "alerting" / "rules.yaml")["groups"]} == {
        provider["folder"]
    }
    assert provider["options"]["path"] == "/etc/grafana/dashboards/axis"
    assert provider["allowUiUpdates"] is False


def test_datasources_are_influxql_and_prometheus_with_fixed_uids() -> None:
    sources = {
        s["uid"]: s for s in load_yaml(PROVISIONING / "datasources" / "datasources.yaml")["datasources"]
    }
    assert set(sources) == {"axis-influxdb", "axis-prometheus"}
    influx = sources["axis-influxdb"]
    assert influx["type"] == "influxdb"
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["dbName"] == "axis"
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    # Grafana expands $__file{} in provisioning; the path must be literal (no nested variables).
    assert re.fullmatch(r"Token \$__file\{/[^${}]+\}", influx["secureJsonData"]["httpHeaderValue1"])
    assert sources["axis-prometheus"]["type"] == "prometheus"
    assert len({s["name"] for s in sources.values()}) == len(sources)


def alert_rules() -> list[dict[str, Any]]:
    """Every rule in the alerting provisioning files."""
    rules: list[dict[str, Any]] = []
    for path in sorted((PROVISIONING / "alerting").glob("*.y*ml")):
        for group in load_yaml(path).get("groups", []):
            assert group["folder"] and group["name"] and group["interval"], group
            rules.extend(group["rules"])
    return rules


def test_alert_rules_are_complete_and_reference_provisioned_sources() -> None:
    rules = alert_rules()
    assert rules
    provisioned = provisioned_datasources()
    dashboard_uids = {load_dashboard(path)["uid"] for path in DASHBOARDS}
    assert len({rule["uid"] for rule in rules}) == len(rules)
    for rule in rules:
        refs = [query["refId"] for query in rule["data"]]
        assert rule["condition"] in refs, rule["title"]
        for query in rule["data"]:
            assert query["model"]["refId"] == query["refId"]
            if query["datasourceUid"] == "__expr__":
                used = set(re.findall(r"\$(\w+)", query["model"]["expression"]))
                assert used and used <= set(refs), query
            else:
                assert query["datasourceUid"] in provisioned, query
                assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"] >= 0
        assert rule["for"] and rule["noDataState"] and rule["execErrState"], rule["title"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["annotations"].get("__dashboardUid__", next(iter(dashboard_uids))) in dashboard_uids
        # Labels are expanded as environment variables by Grafana: a "$" there would be eaten.
        assert "$" not in json.dumps(rule["labels"])


def test_quiet_sensor_rule_compares_each_sensor_with_its_threshold() -> None:
    (rule,) = [rule for rule in alert_rules() if rule["uid"] == "axis-sensor-stopped-pushing"]
    exprs = {query["refId"]: query["model"].get("expr", "") for query in rule["data"]}
    # The quiet sensor must still be returned (Grafana resolves a series that disappears).
    assert "max_over_time(axis_exporter_sensor_last_push_timestamp_seconds" in exprs["SINCE"]
    assert "axis_exporter_sensor_push_interval_seconds" in exprs["THRESHOLD"]
    # One series per serial, named by its current name and site: Grafana's math matches SINCE and THRESHOLD
    # by labels.
    assert all(
        "by (serial)" in expr and "group_left (sensor, site, zone)" in expr
        for ref, expr in exprs.items()
        if ref != "QUIET"
    )
    assert not any("by (sensor" in expr for expr in exprs.values()), "a name is a label, never an identity"
    assert all('job="axis-exporter"' in expr for ref, expr in exprs.items() if ref != "QUIET")


def test_one_contact_point_and_a_policy_that_routes_to_it() -> None:
    document = load_yaml(PROVISIONING / "alerting" / "notifications.yaml")
    (contact_point,) = document["contactPoints"]
    (policy,) = document["policies"]
    assert policy["receiver"] == contact_point["name"]
    (receiver,) = contact_point["receivers"]
    assert receiver["uid"] and receiver["type"] == "webhook"
    # A webhook URL (Slack, Teams) carries a credential: it is a secret file, not an environment variable.
    assert receiver["settings"]["url"] == "$__file{/run/secrets/alert-webhook-url}"
