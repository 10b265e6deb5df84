"""Write evidence folders the way Windows and PowerShell really write them (docs/architecture.md, "Evidence
folder").

Used by ``scaleguard lab create``, by the tests (every policy case is a folder written here and read back
through the real reader) and by the benchmarks. Defaults mimic what an operator gets on a real node:
``netsh ... > sslcert.txt`` from PowerShell is UTF-16 LE with BOM and CRLF, ``ConvertTo-Json`` of a single
object is a bare object, and certificates are exported DER ``.cer`` files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scaleguard.lab.certs import IssuedCertificate

Encoding = Literal["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"]


def encode_text(text: str, encoding: Encoding, *, crlf: bool = True) -> bytes:
    """Bytes as a Windows tool would write ``text``: BOM for the UTF-16 forms, CRLF line ends."""
    if crlf:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if encoding in ("utf-16", "utf-16-le"):  # PowerShell's "Unicode": little-endian
        return b"\xff\xfe" + text.encode("utf-16-le")
    if encoding == "utf-16-be":
        return b"\xfe\xff" + text.encode("utf-16-be")
    return text.encode(encoding)


def settings_xml(root: str, settings: Mapping[str, str | int]) -> str:
    body = "".join(f"  <{k}>{v}</{k}>\n" for k, v in settings.items())
    return f'<?xml version="1.0" encoding="utf-8"?>\n<{root}>\n{body}</{root}>\n'


def settings_json(settings: Mapping[str, str | int]) -> str:
    return json.dumps(dict(settings), indent=2)


@dataclass
class Binding:
    ip_port: str
    cert_hash: str
    app_id: str = "{a1f96506-93e0-4c91-9171-05a2f6739e13}"
    store: str | None = "Root"


def netsh_sslcert_text(bindings: Iterable[Binding]) -> str:
    """``netsh http show sslcert`` output (English, Windows Server 2019 field set)."""
    lines = ["", "SSL Certificate bindings:", "-------------------------", ""]
    for b in bindings:
        lines += [
            f"    IP:port                      : {b.ip_port}",
            f"    Certificate Hash             : {b.cert_hash.lower()}",
            f"    Application ID               : {b.app_id}",
            f"    Certificate Store Name       : {b.store if b.store else '(null)'}",
            "    Verify Client Certificate Revocation : Enabled",
            "    Verify Revocation Using Cached Client Certificate Only : Disabled",
            "    Usage Check                  : Enabled",
            "    Revocation Freshness Time    : 0",
            "    URL Retrieval Timeout        : 0",
            "    Ctl Identifier               : (null)",
            "    Ctl Store Name               : (null)",
            "    DS Mapper Usage              : Disabled",
            "    Negotiate Client Certificate : Disabled",
            "    Reject Connections           : Disabled",
            "    Disable HTTP2                : Not Set",
            "",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class NodeEvidence:
    """One node's evidence, written with :meth:`write`. ``None`` fields produce no file."""

    name: str
    master_settings: dict[str, str | int] | None = None
    worker_settings: dict[str, str | int] | None = None
    config_format: Literal["xml", "json"] = "xml"
    config_encoding: Encoding = "utf-8-sig"
    root: list[IssuedCertificate] = field(default_factory=list)
    my: list[IssuedCertificate] = field(default_factory=list)
    cert_format: Literal["der", "pem"] = "der"
    bindings: list[Binding] | None = field(default_factory=list)
    sslcert_encoding: Encoding = "utf-16-le"
    services: list[dict[str, Any]] | None = None
    keys: list[dict[str, Any]] | None = None
    host: dict[str, Any] | None = None
    schannel: dict[str, int] | None = None

    def write(self, cluster_dir: Path) -> Path:
        node_dir = cluster_dir / self.name
        node_dir.mkdir(parents=True, exist_ok=True)
        for file_name, root_tag, values in (
            ("MasterSettings.config", "MasterSettings", self.master_settings),
            ("WorkerSettings.config", "WorkerSettings", self.worker_settings),
        ):
            if values is None:
                continue
            text = settings_xml(root_tag, values) if self.config_format == "xml" else settings_json(values)
            (node_dir / file_name).write_bytes(encode_text(text, self.config_encoding))
        for store, certs in (("Root", self.root), ("My", self.my)):
            store_dir = node_dir / "certs" / store
            store_dir.mkdir(parents=True, exist_ok=True)
            for cert in certs:
                data = cert.der if self.cert_format == "der" else cert.pem()
                suffix = ".cer" if self.cert_format == "der" else ".pem"
                (store_dir / f"{cert.thumbprint}{suffix}").write_bytes(data)
        if self.bindings is not None:
            text = netsh_sslcert_text(self.bindings)
            (node_dir / "sslcert.txt").write_bytes(encode_text(text, self.sslcert_encoding))
        for file_name, payload in (
            ("services.json", self.services),
            ("keys.json", self.keys),
            ("host.json", self.host),
            ("schannel.json", self.schannel),
        ):
            if payload is not None:
                (node_dir / file_name).write_bytes(encode_text(powershell_json(payload), "utf-8-sig"))
        return node_dir


def powershell_json(payload: Any) -> str:
    """JSON as ``ConvertTo-Json`` writes it: a lone object instead of a one-element array, ``"Key":  value``."""
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    return json.dumps(payload, indent=4).replace('": ', '":  ')


def key_entries(node: NodeEvidence, readers: Mapping[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """keys.json rows for every certificate of ``node`` (private key on My certs and on the master cert).

    ``readers`` maps a thumbprint to the identities that may read its key; scaleguard accepts that as an
    optional ``KeyReaders`` column (see README: how to export it with ``Get-Acl``).
    """
    rows = []
    for store, certs in (("Root", node.root), ("My", node.my)):
        for cert in certs:
            row: dict[str, Any] = {
                "Thumbprint": cert.thumbprint,
                "HasPrivateKey": False,
                "PSParentPath": f"Microsoft.PowerShell.Security\\Certificate::LocalMachine\\{store}",
            }
            if readers is not None and cert.thumbprint in readers:
                row["HasPrivateKey"] = True
                row["KeyReaders"] = readers[cert.thumbprint]
            rows.append(row)
    return rows
