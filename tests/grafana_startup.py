"""What Grafana 11.6 checks when it starts with this repository's provisioning, as code that can run here.

Grafana cannot run on the test machines, and a file that validates against a JSON schema can still stop
Grafana at start. Each rule below mirrors a check Grafana makes at start-up and names the Grafana source
file it comes from (github.com/grafana/grafana, v11.6 era). The order is Grafana's:
``RunInitProvisioners`` (pkg/services/provisioning/provisioning.go) provisions datasources, then
alerting (contact points, policies, then rules), and only later, in the background ``Run``, dashboards.
An error in the first two stops Grafana; a dashboard folder error is logged and the provider's
dashboards are not loaded. Both are reported here as errors: neither leaves a working stack.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

# pkg/util/shortid_generator.go, ValidateUID: what a contact point or rule uid may be.
_UID = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")
# pkg/services/ngalert/models/alert_rule.go, NoDataStateFromString / ErrStateFromString.
NO_DATA_STATES = {"Alerting", "NoData", "OK", "KeepLast"}
EXEC_ERR_STATES = {"Alerting", "Error", "OK", "KeepLast"}
# Datasource uids Grafana itself provides to rules and panels.
BUILTIN_DATASOURCES = {"__expr__", "-- Grafana --", "grafana"}
_FILE = re.compile(r"\$__file\{([^}]*)\}")
_ENV = re.compile(r"\$__env\{([^}]*)\}|\$\{(\w+)\}|\$(\w+)")


@dataclass
class GrafanaContainer:
    """The grafana compose service as the container sees it: environment and what is mounted where."""

    environment: dict[str, str]
    mounts: dict[str, Path | None]  # container path -> host path (None: a named volume or a secret)
    provisioning: Path  # host folder mounted at /etc/grafana/provisioning

    def host_path(self, container_path: str) -> Path | None:
        """The host file behind ``container_path`` if a bind mount provides it."""
        for target, source in self.mounts.items():
            path = PurePosixPath(container_path)
            if source is not None and (
                path == PurePosixPath(target) or PurePosixPath(target) in path.parents
            ):
                return source / path.relative_to(target)
        return None

    def is_mounted(self, container_path: str) -> bool:
        """Whether ``container_path`` lies on one of the service's mounts."""
        path = PurePosixPath(container_path)
        return any(path == PurePosixPath(t) or PurePosixPath(t) in path.parents for t in self.mounts)


@dataclass
class Folders:
    """Grafana's folders (title -> uid), which persist in grafana-data from one start to the next."""

    by_title: dict[str, str] = field(default_factory=dict)
    created: int = 0

    def create(self, title: str, uid: str | None) -> str:
        self.created += 1
        self.by_title[title] = uid or f"random-{self.created}"  # util.GenerateShortUID()
        return self.by_title[title]


def _interpolate(value: str, where: str, grafana: GrafanaContainer, errors: list[str]) -> str:
    """pkg/services/provisioning/values/values.go: ``$$`` is a literal ``$``; ``$__file{path}``,
    ``$__env{X}``, ``${X}`` and ``$X`` are expanded. A missing file stops Grafana; an undefined variable
    silently becomes empty, which is reported here because it is never what was meant."""
    parts = value.split("$$")
    expanded = []
    for part in parts:
        for path in _FILE.findall(part):
            if not grafana.is_mounted(path):
                errors.append(
                    f"{where}: $__file{{{path}}} is not on any mount of the grafana service "
                    "(values.go: 'got error while expanding expander file: stat ...: no such file')"
                )
        part = _FILE.sub("<file>", part)
        for braced_env, braced, bare in _ENV.findall(part):
            name = braced_env or braced or bare
            if name not in grafana.environment:
                errors.append(
                    f"{where}: ${name} is not set in the grafana service's environment; Grafana would "
                    "silently use an empty string (values.go)"
                )
        expanded.append(
            _ENV.sub(lambda m: grafana.environment.get(m.group(1) or m.group(2) or m.group(3), ""), part)
        )
    return "$".join(expanded)


def _expand_all(node: Any, where: str, grafana: GrafanaContainer, errors: list[str]) -> Any:
    """Interpolate every string in a provisioning document (values.JSONValue and friends)."""
    if isinstance(node, str):
        return _interpolate(node, where, grafana, errors)
    if isinstance(node, dict):
        return {key: _expand_all(value, where, grafana, errors) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand_all(value, where, grafana, errors) for value in node]
    return node


def _documents(grafana: GrafanaContainer, kind: str) -> list[tuple[str, dict[str, Any]]]:
    folder = grafana.provisioning / kind
    found = []
    for path in sorted(folder.glob("*.y*ml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        found.append((f"{kind}/{path.name}", document))
    return found


def check_settings(grafana: GrafanaContainer) -> list[str]:
    """pkg/setting/setting.go loads GF_* variables, then expands $__file{} in every setting
    (pkg/setting/expanders.go, fileExpander: an unreadable path stops Grafana)."""
    errors: list[str] = []
    for name, value in grafana.environment.items():
        if name.startswith("GF_"):
            for path in _FILE.findall(value):
                if not grafana.is_mounted(path):
                    errors.append(f"environment {name}: $__file{{{path}}} is not mounted (expanders.go)")
        if (
            name.startswith("GF_")
            and name.endswith("__FILE")
            and name.removesuffix("__FILE") in grafana.environment
        ):
            errors.append(
                f"environment: {name} and {name.removesuffix('__FILE')} are both set (docker run.sh)"
            )
    return errors


def check_datasources(grafana: GrafanaContainer) -> tuple[set[str], list[str]]:
    """pkg/services/provisioning/datasources/config_reader.go: apiVersion, one default per org, names."""
    errors: list[str] = []
    uids: set[str] = set()
    defaults: dict[int, int] = {}
    for where, document in _documents(grafana, "datasources"):
        document = _expand_all(document, where, grafana, errors)
        if document.get("apiVersion") != 1:
            errors.append(f"{where}: apiVersion must be 1")
        for source in document.get("datasources") or []:
            if not source.get("name") or not source.get("type"):
                errors.append(f"{where}: a datasource without name or type")
            org = int(source.get("orgId", 1))
            defaults[org] = defaults.get(org, 0) + bool(source.get("isDefault"))
            uid = source.get("uid", "")
            if not _UID.match(uid):
                errors.append(f"{where}: datasource uid {uid!r} is not 1-40 of [a-zA-Z0-9-_]")
            if uid in uids:
                errors.append(f"{where}: datasource uid {uid!r} twice")
            uids.add(uid)
    for org, count in defaults.items():
        if count > 1:
            errors.append(
                f"datasources: {count} defaults in org {org}: 'Only one datasource per organization'"
            )
    return uids, errors


def check_alerting(grafana: GrafanaContainer, datasources: set[str], folders: Folders) -> list[str]:
    """pkg/services/provisioning/alerting: contact points (contact_point_types.go), policies
    (notification_policy_types.go, checked by NotificationPolicyService.UpdatePolicyTree), then rules
    (rules_types.go, rules_provisioner.go; ngalert/models/alert_rule.go). Any error stops Grafana."""
    errors: list[str] = []
    receivers: set[str] = set()
    documents = [
        (where, _expand_alerting(doc, where, grafana, errors))
        for where, doc in _documents(grafana, "alerting")
    ]
    for where, document in documents:
        for point in document.get("contactPoints") or []:
            if not point.get("name"):
                errors.append(f"{where}: contact point: no name is set")
            receivers.add(point.get("name", ""))
            for receiver in point.get("receivers") or []:
                errors += _receiver_errors(where, receiver)
    for where, document in documents:
        for policy in document.get("policies") or []:
            errors += _route_errors(where, policy, receivers, root=True)
    for where, document in documents:
        for group in document.get("groups") or []:
            errors += _group_errors(where, group, datasources, folders)
    return errors


def _receiver_errors(where: str, receiver: dict[str, Any]) -> list[str]:
    """contact_point_types.go and ValidateContactPoint: uid, type, settings; a webhook needs a URL."""
    uid = receiver.get("uid")
    if not _UID.match(str(uid or "")):
        return [f"{where}: receiver uid {uid!r} is not 1-40 of [a-zA-Z0-9-_]"]
    if not receiver.get("type") or not receiver.get("settings"):
        return [f"{where}: receiver {uid!r}: no type or settings set"]
    if receiver["type"] != "webhook":
        return []
    url = str(receiver["settings"].get("url", "")).strip()
    if not url:
        return [f"{where}: webhook {uid!r}: could not find url property"]
    if urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1"):
        # Not a start-up error, but every notification would fail where nobody looks.
        return [f"{where}: webhook {uid!r} posts to Grafana's own loopback"]
    return []


def _expand_alerting(
    document: dict[str, Any], where: str, grafana: GrafanaContainer, errors: list[str]
) -> dict[str, Any]:
    """Interpolate as Grafana does: contact points and policies whole (values.JSONValue); in rules
    everything but the annotations and the query models, which rules_types.go takes raw (.Raw)."""
    expanded = {
        key: _expand_all(value, where, grafana, errors) for key, value in document.items() if key != "groups"
    }
    groups = []
    for group in document.get("groups") or []:
        rules = []
        for rule in group.get("rules") or []:
            raw = {key: rule[key] for key in ("annotations", "data") if key in rule}
            copy = _expand_all({k: v for k, v in rule.items() if k not in raw}, where, grafana, errors)
            copy["annotations"] = raw.get("annotations", {})
            copy["data"] = [
                {
                    **_expand_all({k: v for k, v in query.items() if k != "model"}, where, grafana, errors),
                    "model": query.get("model"),
                }
                for query in raw.get("data") or []
            ]
            rules.append(copy)
        groups.append(
            {
                **_expand_all({k: v for k, v in group.items() if k != "rules"}, where, grafana, errors),
                "rules": rules,
            }
        )
    expanded["groups"] = groups
    return expanded


def _route_errors(where: str, route: dict[str, Any], receivers: set[str], *, root: bool) -> list[str]:
    errors = []
    receiver = route.get("receiver")
    if root and not receiver:
        errors.append(f"{where}: root route must specify a default receiver")
    if receiver and receiver not in receivers:
        errors.append(f"{where}: receiver '{receiver}' does not exist")
    for child in route.get("routes") or []:
        errors += _route_errors(where, child, receivers, root=False)
    return errors


def _group_errors(where: str, group: dict[str, Any], datasources: set[str], folders: Folders) -> list[str]:
    errors = []
    if not group.get("name"):
        errors.append(f"{where}: rule group has no name set")
    if not group.get("folder"):
        errors.append(f"{where}: rule group has no folder set")
    elif group["folder"] not in folders.by_title:
        # rules_provisioner.go getOrCreateFolderByTitle: looked up by title, created with a random uid.
        folders.create(group["folder"], None)
    if not re.fullmatch(r"\d+[smhd]", str(group.get("interval", ""))):
        errors.append(
            f"{where}: group {group.get('name')!r}: interval {group.get('interval')!r} does not parse"
        )
    for rule in group.get("rules") or []:
        title = rule.get("title") or "?"
        for key in ("title", "uid", "condition", "data"):
            if not rule.get(key):
                errors.append(f"{where}: rule '{title}' failed to parse: no {key} set")
        if rule.get("uid") and not _UID.match(rule["uid"]):
            errors.append(f"{where}: rule '{title}': cannot create rule with UID '{rule['uid']}'")
        if rule.get("noDataState", "NoData") not in NO_DATA_STATES:
            errors.append(f"{where}: rule '{title}': unknown NoData state option {rule['noDataState']}")
        if rule.get("execErrState", "Alerting") not in EXEC_ERR_STATES:
            errors.append(f"{where}: rule '{title}': unknown Error state option {rule['execErrState']}")
        annotations = rule.get("annotations") or {}
        dashboard, panel = annotations.get("__dashboardUid__", ""), str(annotations.get("__panelId__", ""))
        # alert_rule.go, SetDashboardAndPanelFromAnnotations (called from CreateAlertRule).
        if bool(dashboard) != bool(panel):
            errors.append(
                f"{where}: rule '{title}': invalid alert rule: both annotations __dashboardUid__ and "
                "__panelId__ must be specified"
            )
        elif panel and not re.fullmatch(r"-?\d+", panel):
            errors.append(f"{where}: rule '{title}': annotation __panelId__ must be a valid integer Panel ID")
        refs = [query.get("refId") for query in rule.get("data") or []]
        if rule.get("condition") and rule["condition"] not in refs:
            errors.append(f"{where}: rule '{title}': condition {rule['condition']} is none of {refs}")
        for query in rule.get("data") or []:
            uid = query.get("datasourceUid")
            if uid not in datasources | BUILTIN_DATASOURCES:
                errors.append(f"{where}: rule '{title}' query {query.get('refId')}: no datasource {uid!r}")
    return errors


def check_dashboards(
    grafana: GrafanaContainer, folders: Folders
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """pkg/services/provisioning/dashboards: config_reader.go (type, path), file_reader.go
    (getOrCreateFolder: by folderUid if set, else by title; a new folder with the title of an existing
    one fails with 'a folder with the same name already exists', grafana/grafana#87889)."""
    errors: list[str] = []
    loaded: dict[str, dict[str, Any]] = {}
    for where, document in _documents(grafana, "dashboards"):
        document = _expand_all(document, where, grafana, errors)
        for provider in document.get("providers") or []:
            if provider.get("type", "file") != "file":
                errors.append(f"{where}: type {provider['type']} is not supported")
                continue
            path = (provider.get("options") or {}).get("path")
            if not isinstance(path, str):
                errors.append(f"{where}: failed to load dashboards, path param is not a string")
                continue
            title, uid = provider.get("folder", ""), provider.get("folderUid", "")
            if title and uid:
                if uid not in folders.by_title.values():
                    if title in folders.by_title:
                        errors.append(
                            f"{where}: failed to get or create provisioning folder with name {title!r}: "
                            "a folder with the same name already exists (it has uid "
                            f"{folders.by_title[title]}, the provider asks for {uid})"
                        )
                        continue
                    folders.create(title, uid)
            elif title and title not in folders.by_title:
                folders.create(title, None)
            host = grafana.host_path(path)
            if host is None or not host.is_dir():
                errors.append(f"{where}: {path} is not a folder mounted into the grafana service")
                continue
            for file in sorted(host.glob("*.json")):
                dashboard = json.loads(file.read_text(encoding="utf-8"))
                if dashboard.get("uid") in loaded:
                    errors.append(f"{where}: dashboard uid {dashboard['uid']!r} in two files")
                loaded[dashboard.get("uid", file.name)] = dashboard
    return loaded, errors


def panel_ids(dashboard: dict[str, Any]) -> set[int]:
    """Ids of every panel, rows' panels included."""
    ids: set[int] = set()
    for panel in dashboard.get("panels", []):
        ids.add(panel.get("id"))
        ids |= {child.get("id") for child in panel.get("panels", [])}
    return ids


def startup_errors(grafana: GrafanaContainer, folders: Folders | None = None) -> list[str]:
    """Everything that would stop this Grafana or leave it without dashboards, in Grafana's order.

    ``folders`` is what grafana-data holds from earlier starts (empty: the first start).
    """
    folders = folders if folders is not None else Folders()
    errors = check_settings(grafana)
    datasources, found = check_datasources(grafana)
    errors += found
    errors += check_alerting(grafana, datasources, folders)
    dashboards, found = check_dashboards(grafana, folders)
    errors += found
    # Not a start-up check: Grafana takes any panel link, but a link to nothing helps no one.
    for where, document in _documents(grafana, "alerting"):
        for group in document.get("groups") or []:
            for rule in group.get("rules") or []:
                annotations = rule.get("annotations") or {}
                uid, panel = annotations.get("__dashboardUid__"), str(annotations.get("__panelId__", ""))
                linked = uid in dashboards and panel.isdigit() and int(panel) in panel_ids(dashboards[uid])
                if uid and not linked:
                    errors.append(
                        f"{where}: rule {rule.get('title')!r} links to dashboard {uid} panel {panel}, "
                        "which does not exist"
                    )
    return errors
