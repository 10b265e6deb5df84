"""The lab's answer to ``{"op": "collect"}``: the agent's JSON document, rendered from node state.

The shape is the one ``collectors/agent/collect.ps1`` prints on a real node (see
:mod:`scaleguard.collectors.agent.schema`), so the live collector cannot tell the lab from Windows. What the
lab does not know it reports as the agent reports what it could not read: ``null`` plus an error.
"""

from __future__ import annotations

import base64
from typing import Any

from scaleguard.collectors.agent.schema import AGENT_SCHEMA, SECTIONS
from scaleguard.lab.state import CONFIG_DIR, SQL_VERSIONS, ActionError, LabCert, LabNode


def collect(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    wanted = request.get("sections") or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        raise ActionError(f"unknown section(s): {', '.join(map(str, unknown))}")
    doc: dict[str, Any] = {"schema": AGENT_SCHEMA, "op": "collect", "errors": []}
    renderers = {
        "identity": _identity,
        "sql": _sql,
        "configs": _configs,
        "stores": _stores,
        "bindings": _bindings,
        "services": _services,
        "schannel": _schannel,
        "ssisdb": _ssisdb,
    }
    for section in wanted:
        doc[section] = renderers[section](node, doc)
    return doc


def _error(doc: dict[str, Any], source: str, message: str) -> None:
    doc["errors"].append({"source": source, "message": message})


def _identity(node: LabNode, doc: dict[str, Any]) -> dict[str, Any]:
    return {"computer_name": node.name, "fqdn": node.fqdn, "addresses": node.addresses}


def _sql(node: LabNode, doc: dict[str, Any]) -> list[dict[str, Any]]:
    present, version = node.roles(), node.sql_version
    if not present or version not in SQL_VERSIONS:
        return []
    return [{"version": version, "binn": CONFIG_DIR.format(version=version), "master_marker": "master" in present}]


def _configs(node: LabNode, doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "role": role,
            "version": node.sql_version,
            "path": node.config_path(role),
            "content_b64": base64.b64encode(node.config(role) or b"").decode("ascii"),
        }
        for role in node.roles()
    ]


def _cert(cert: LabCert, store: str, doc: dict[str, Any]) -> dict[str, Any]:
    key = cert.usable_key
    if cert.key is not None and key is None:
        # what collect.ps1 records when GetRSAPrivateKey throws (Windows' reason after the colon)
        _error(doc, f"stores/{store}/{cert.thumbprint}", "private key not readable: Keyset does not exist")
    elif key is not None and key.readers is None:
        # readers the evidence does not give: on Windows Get-Acl either answers or throws, and the agent
        # records the throw, so "unknown" is never silent here either
        _error(doc, f"stores/{store}/{cert.thumbprint}", "key ACL not readable: the lab's evidence does not say")
    return {
        "thumbprint": cert.thumbprint,
        "der_b64": base64.b64encode(cert.der).decode("ascii"),
        "has_private_key": cert.has_private_key,
        "key_provider": key.provider if key is not None else None,
        "key_file": key.file if key is not None else None,
        "key_readers": list(key.readers) if key is not None and key.readers is not None else None,
    }


def _stores(node: LabNode, doc: dict[str, Any]) -> dict[str, Any]:
    stores: dict[str, Any] = {}
    for name, certs in (("Root", node.root), ("My", node.my)):
        if certs is None:
            _error(doc, f"stores/{name}", f"LocalMachine\\{name} is not in the lab's evidence")
            stores[name] = None
        else:
            stores[name] = [_cert(c, name, doc) for c in certs]
    return stores


def _bindings(node: LabNode, doc: dict[str, Any]) -> dict[str, Any] | None:
    if node.bindings is None:
        _error(doc, "bindings", "SslBindingInfo could not be read (not in the lab's evidence)")
        return None
    return {
        "source": "registry",
        "entries": [
            {
                "ip_port": b.ip_port,
                "kind": b.kind,
                "cert_hash": b.cert_hash.lower() if b.cert_hash else None,
                "app_id": b.app_id,
                "store": b.store,
            }
            for b in node.bindings
        ],
        "netsh_b64": None,
    }


def _services(node: LabNode, doc: dict[str, Any]) -> list[dict[str, Any]] | None:
    if node.services is None:
        _error(doc, "services", "the services are not in the lab's evidence")
        return None
    return [
        {"Name": s.name, "State": s.state, "StartMode": s.start_mode, "StartName": s.account}
        for s in node.services
    ]


def _schannel(node: LabNode, doc: dict[str, Any]) -> dict[str, Any] | None:
    if node.schannel is None:
        # collect.ps1's section is null only after a throw it records (an unreadable key, a value that is
        # not REG_DWORD); absent values are nulls inside it
        _error(doc, "schannel", "the SCHANNEL values are not in the lab's evidence")
        return None
    return {
        "ClientAuthTrustMode": node.schannel.client_auth_trust_mode,
        "SendTrustedIssuerList": node.schannel.send_trusted_issuer_list,
    }


def _ssisdb(node: LabNode, doc: dict[str, Any]) -> dict[str, Any] | None:
    if "master" not in node.roles():
        return None
    if node.ssisdb is None:
        _error(doc, "ssisdb", "SSISDB not reachable (lab: no ssisdb.json, and no default could be made)")
        return None
    return {
        "master_properties": dict(node.ssisdb.master_properties),
        "worker_agents": [dict(a) for a in node.ssisdb.worker_agents],
    }
