"""Which file a finding is about, as a SARIF ``physicalLocation``.

GitHub code scanning drops a result without ``physicalLocation.artifactLocation.uri``, and a finding is
always about something a person can open: the node's settings file, its ``sslcert.txt`` (the HTTP.sys
binding), ``keys.json`` (private-key ACLs), ``services.json``, ``schannel.json``, ``ssisdb.json`` or the
certificate file itself. The path is the one an evidence folder uses (``<node>/<file>``), which is also
what ``scaleguard collect`` would lay out for a live node, so a result points at the same file whichever
way the cluster was read.

Relative paths are kept relative, as GitHub wants them (it resolves them against the repository root):

* offline, evidence folder given as a relative path (the usual CI job that audits a committed folder):
  ``<that path>/<node>/<file>`` under ``%SRCROOT%``, i.e. the checkout;
* offline, absolute evidence path: ``<node>/<file>`` under ``EVIDENCE``, whose ``originalUriBaseIds``
  entry is the folder's ``file:`` URI;
* live: ``<node>/<file>`` under ``NODES``, described as the nodes read over WinRM.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from scaleguard.findings.model import Finding, Remediation
from scaleguard.snapshot.model import ClusterSnapshot, NodeSnapshot

MASTER_FILE = "MasterSettings.config"
WORKER_FILE = "WorkerSettings.config"
SRCROOT = "%SRCROOT%"
EVIDENCE = "EVIDENCE"
NODES = "NODES"

BY_REMEDIATION: dict[str, str] = {
    Remediation.REPAIR_MASTER_BINDING: "sslcert.txt",
    Remediation.GRANT_WORKER_KEY_ACCESS: "keys.json",
    Remediation.START_SERVICE: "services.json",
    Remediation.SET_SCHANNEL_TRUST_MODE: "schannel.json",
}
"""Remediations whose evidence lives in one artefact of the node, whatever the policy."""

CERTIFICATE_REMEDIATIONS = frozenset(
    {
        Remediation.ROTATE_MASTER_CERTIFICATE,
        Remediation.ROTATE_WORKER_CERTIFICATE,
        Remediation.IMPORT_ROOT_CERTIFICATE,
        Remediation.REMOVE_STALE_WORKER_CERTIFICATES,
    }
)
"""Remediations about one certificate: the result points at its file when the node holds it."""


class LocationBase:
    """How the URIs of one cluster are anchored (see the module docstring)."""

    def __init__(self, cluster: ClusterSnapshot | None, fallback_source: str, mode: str, *, ordinal: int = 0) -> None:
        """``ordinal`` tells the evidence bases of several clusters apart (``EVIDENCE``, ``EVIDENCE2``...)."""
        source = cluster.source if cluster is not None else fallback_source
        self.prefix = ""
        self.base_id = NODES
        self.original: dict[str, Any] = {
            NODES: {"description": {"text": "the nodes read over WinRM, laid out as an evidence folder"}}
        }
        if mode == "offline" and source:
            path = _as_path(source)
            if path.is_absolute():
                self.base_id = EVIDENCE + (str(ordinal + 1) if ordinal else "")
                self.original = {self.base_id: {"uri": path.as_uri().rstrip("/") + "/"}}
            else:
                self.base_id = SRCROOT
                self.prefix = path.as_posix().strip("/") + "/" if path.as_posix() not in ("", ".") else ""
                self.original = {}

    def location(self, relative: str) -> dict[str, Any]:
        return {"uri": quote(self.prefix + relative, safe="/"), "uriBaseId": self.base_id}


def _as_path(source: str) -> PurePosixPath | PureWindowsPath:
    """The evidence path as written, read as a Windows path when it looks like one (``C:\\...``, ``\\\\host``),
    so a findings file written on a Windows jump host gives the same URIs on Linux."""
    windows = PureWindowsPath(source)
    if windows.drive or "\\" in source:
        return windows
    return PurePosixPath(source)


def artifact(finding: Finding, policy: dict[str, Any], cluster: ClusterSnapshot | None) -> str:
    """``<node>/<file>`` (POSIX separators, not yet percent-encoded) for one finding."""
    node = cluster.node(finding.node) if cluster is not None else None
    if node is None and cluster is not None and cluster.masters:
        node = cluster.masters[0]  # a cluster-wide finding: the master's settings are what all agree on
    name = node.name if node is not None else finding.node
    offline = cluster is None or cluster.mode == "offline"
    return f"{name}/{_file(finding, policy, node, offline)}"


def _file(finding: Finding, policy: dict[str, Any], node: NodeSnapshot | None, offline: bool) -> str:
    remediation = finding.remediation or ""
    if remediation in BY_REMEDIATION:
        return BY_REMEDIATION[remediation]
    if any("ssisdb" in str(fact) for fact in policy.get("requires") or ()):
        return "ssisdb.json"
    if remediation in CERTIFICATE_REMEDIATIONS and node is not None and offline:
        source = _certificate_file(node, finding.subject)
        if source:
            return source
    if node is not None and not node.roles():
        return ""  # not collected or no Scale Out role: the node folder itself is what to look at
    return _settings_file(finding, node, offline)


def _certificate_file(node: NodeSnapshot, thumbprint: str | None) -> str | None:
    for store in (node.my, node.root):
        cert = store.find(thumbprint) if store is not None else None
        if cert is not None and cert.source and not cert.source.startswith(("/", "\\")) and ".." not in cert.source:
            return cert.source.replace("\\", "/")
    return None


def _settings_file(finding: Finding, node: NodeSnapshot | None, offline: bool) -> str:
    scope = finding.scope
    master = scope == "master" or (scope != "worker" and node is not None and node.is_master)
    config = None if node is None else node.master_config if master else node.worker_config
    if offline and config is not None and "/" not in config.path and "\\" not in config.path and config.path:
        return config.path  # the name as found in the folder (Windows names are case-insensitive)
    return MASTER_FILE if master else WORKER_FILE
