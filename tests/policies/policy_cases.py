"""Policy cases as data: a small cluster described in YAML, written as a real evidence folder, read back.

A case file (``cases/<anything>.yaml``) holds ``policies`` (the ids whose findings are compared; default
the file stem) and ``cases`` (name → case). A case starts from a healthy cluster and states only what is
different, so the defect under test is the whole text of the case:

    masters: [MASTER01, MASTER02]       # default [MASTER01]
    workers: [WORKER01]                 # default [WORKER01]
    endpoint_host: ssis.contoso.test    # default: FQDN of the only master, else the HA DNS name
    mode: live                          # marks the snapshot live (as WinRM collection would)
    certs: {old: {cn: [MASTER01], days_from: -400, days: 300, key_size: 1024, hash: md5, issuer: ca}}
    ssisdb: {MASTER01: {SSLCERT_THUMBPRINT: "{master}"}}
    nodes:
      MASTER01:
        master_settings: {SSLCertThumbprint: "{master|spaced}", PortNumber: null}  # null deletes
        master_config_text: "<broken"           # written instead of the settings
        root: [master] | unknown      root_add: [old]      root_remove: [WORKER01]   (my: likewise)
        bindings: [{ip_port: 0.0.0.0:8391, cert: old, store: null}] | unknown
        master_service: {State: Stopped} | null        worker_service: ...
        services: unknown             keys: unknown        host: unknown | {fqdn: .., addresses: [..]}
        private_key: {master: false}  key_readers: {WORKER01: [SYSTEM] | null}
        schannel: {ClientAuthTrustMode: 2}
        collection: {state: unreachable, reason: timed out}   # as a live collector would record it
        delete: [certs/Root]          files: {extra.txt: text}
    expect:                           # the exact set: "POLICY NODE STATUS [SEVERITY] [n/a]"
      - SO-M05 MASTER01 fail critical #   n/a = applicable false; node CLUSTER = the cluster finding
    says: {SO-M05 MASTER01: ["{old}", "0.0.0.0:8391"]}   # substrings the message must contain

Certificates are named: ``master`` (shared by every master node) and one per worker, named after it.
``{name}`` in any string is that certificate's thumbprint; ``{name|lower}``, ``{name|spaced}`` (pairs
separated by spaces, as the certificate dialog shows it) and ``{name|lrm}`` (with the invisible U+200E
the dialog puts in front) are the messy forms.
"""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from scaleguard.collectors.evidence import read_evidence
from scaleguard.lab.certs import CertSpec, IssuedCertificate, make_certificate
from scaleguard.lab.evidence import Binding, NodeEvidence, encode_text
from scaleguard.snapshot.model import Collection, CollectionState, Snapshot, SsisDb

CASES_DIR = Path(__file__).parent / "cases"
CLUSTER = "CLUSTER"
DOMAIN = "contoso.test"
PORT = 8391
VERSION = "150"
MASTER_SERVICE = f"SSISScaleOutMaster{VERSION}"
WORKER_SERVICE = f"SSISScaleOutWorker{VERSION}"
STOCK_READERS = ["NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators"]
_TEMPLATE = re.compile(r"\{([A-Za-z0-9_.-]+)(?:\|(lower|spaced|lrm))?\}")
_STORE_PATH = "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\{store}"


@dataclass
class Expected:
    policy: str
    node: str
    status: str
    severity: str | None
    applicable: bool


@dataclass
class Case:
    file: str
    name: str
    policies: list[str]
    spec: dict[str, Any]
    expected: list[Expected] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        policies = doc.get("policies") or [path.stem]
        for name, spec in doc["cases"].items():
            case = Case(path.stem, name, list(policies), spec or {})
            case.expected = [_expected(line) for line in case.spec.get("expect", [])]
            cases.append(case)
    return cases


def _expected(line: str) -> Expected:
    parts = line.split()
    policy, node, status, *rest = parts
    applicable = "n/a" not in rest
    rest = [p for p in rest if p != "n/a"]
    return Expected(policy, node, status, rest[0] if rest else None, applicable)


# ------------------------------------------------------------------------------------------ building


class Materialiser:
    """Turns a case spec into an evidence folder (lab writers) and a snapshot (the real reader)."""

    def __init__(self, spec: dict[str, Any], now: datetime) -> None:
        self.spec = spec
        self.now = now
        self.masters: list[str] = list(spec.get("masters", ["MASTER01"]))
        self.workers: list[str] = list(spec.get("workers", ["WORKER01"]))
        default_host = f"{self.masters[0].lower()}.{DOMAIN}" if len(self.masters) == 1 else f"ssis-master.{DOMAIN}"
        self.endpoint_host: str = spec.get("endpoint_host", default_host)
        self.addresses = {name: f"10.0.1.{i + 1}" for i, name in enumerate(self.masters)}
        self.addresses.update({name: f"10.0.2.{i + 1}" for i, name in enumerate(self.workers)})
        self.certs: dict[str, IssuedCertificate] = {}
        self._cert_specs = self._default_cert_specs()
        self._cert_specs.update(spec.get("certs") or {})

    # ------------------------------------------------------------------ certificates and templates

    def _default_cert_specs(self) -> dict[str, dict[str, Any]]:
        specs: dict[str, dict[str, Any]] = {
            "master": {
                "cn": [self.endpoint_host, *self.masters, *(self.addresses[m] for m in self.masters)],
                "hash": "sha1",
            }
        }
        for name in self.workers:
            specs[name] = {
                "cn": [name],
                "san_dns": [f"{name.lower()}.{DOMAIN}"],
                "san_ip": [self.addresses[name]],
            }
        return specs

    def cert(self, name: str) -> IssuedCertificate:
        if name not in self.certs:
            spec = self._cert_specs[name]
            issuer = self.cert(spec["issuer"]) if spec.get("issuer") else None
            self.certs[name] = make_certificate(
                CertSpec(
                    common_names=tuple(spec.get("cn", [name])),
                    san_dns=tuple(spec.get("san_dns", [])),
                    san_ip=tuple(spec.get("san_ip", [])),
                    valid_from_days=int(spec.get("days_from", -30)),
                    valid_days=int(spec.get("days", 365)),
                    key_size=int(spec.get("key_size", 2048)),
                    key_type=str(spec.get("key_type", "rsa")),
                    hash=str(spec.get("hash", "sha256")),
                    serial=spec.get("serial"),
                    ca=bool(spec.get("ca", False)),
                ),
                issuer=issuer,
                now=self.now,
            )
        return self.certs[name]

    def fill(self, value: Any) -> Any:
        """Resolve ``{cert}`` templates anywhere in ``value``."""
        if isinstance(value, str):
            return _TEMPLATE.sub(self._thumbprint_form, value)
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value

    def _thumbprint_form(self, match: re.Match[str]) -> str:
        name, form = match.group(1), match.group(2)
        if name not in self._cert_specs:
            return match.group(0)
        thumb = self.cert(name).thumbprint
        if form == "lower":
            return thumb.lower()
        if form == "spaced":
            return " ".join(thumb[i : i + 2] for i in range(0, 40, 2)).lower()
        if form == "lrm":
            return "\u200e" + thumb
        return thumb

    # ------------------------------------------------------------------ nodes

    def node_names(self) -> list[str]:
        extra = [n for n in (self.spec.get("nodes") or {}) if n not in self.masters and n not in self.workers]
        return [*self.masters, *self.workers, *extra]

    def evidence(self, name: str) -> tuple[NodeEvidence, dict[str, Any]]:
        over: dict[str, Any] = copy.deepcopy((self.spec.get("nodes") or {}).get(name) or {})
        is_master, is_worker = name in self.masters, name in self.workers
        root: list[str] = []
        my: list[str] = []
        if is_master:
            root += ["master", *self.workers]
        if is_worker:
            root += [c for c in ("master", name) if c not in root]
            my.append(name)
        root = self._store(root, over, "root")
        my = self._store(my, over, "my")
        node = NodeEvidence(
            name=name,
            master_settings=self._settings(self._master_settings() if is_master else None, over, "master_settings"),
            worker_settings=self._settings(self._worker_settings(name) if is_worker else None, over, "worker_settings"),
            config_format=over.get("config_format", "xml"),
            root=[self.cert(c) for c in root],
            my=[self.cert(c) for c in my],
            bindings=self._bindings(is_master, over),
            services=self._services(is_master, is_worker, over),
            host=self._host(name, over),
            schannel=self.fill(over.get("schannel")),
        )
        node.keys = self._keys(name, root, my, is_master, is_worker, over)
        return node, over

    def _store(self, default: list[str], over: dict[str, Any], key: str) -> list[str]:
        value = over.get(key, default)
        if value == "unknown":
            over.setdefault("delete", []).append(f"certs/{'Root' if key == 'root' else 'My'}")
            return []
        names = list(value)
        names += [c for c in over.get(f"{key}_add", []) if c not in names]
        return [c for c in names if c not in over.get(f"{key}_remove", [])]

    def _master_settings(self) -> dict[str, Any]:
        return {"PortNumber": PORT, "SSLCertThumbprint": "{master}", "SqlServerName": self.masters[0]}

    def _worker_settings(self, name: str) -> dict[str, Any]:
        return {
            "DisplayName": name,
            "MasterEndpoint": f"https://{self.endpoint_host}:{PORT}",
            "MasterHttpsCertThumbprint": "{master}",
            "WorkerHttpsCertThumbprint": "{" + name + "}",
            "StoreLocation": "LocalMachine",
            "StoreName": "My",
        }

    def _settings(self, default: dict[str, Any] | None, over: dict[str, Any], key: str) -> dict[str, Any] | None:
        if default is None:
            return None
        merged = {**default, **(over.get(key) or {})}
        return {k: self.fill(v) for k, v in merged.items() if v is not None}

    def _bindings(self, is_master: bool, over: dict[str, Any]) -> list[Binding] | None:
        default = [{"ip_port": f"0.0.0.0:{PORT}", "cert": "master", "store": "Root"}] if is_master else []
        value = over.get("bindings", default)
        if value == "unknown":
            return None
        out = []
        for b in value:
            cert = str(b.get("cert", "master"))
            digest = self.cert(cert).thumbprint if cert in self._cert_specs else cert
            out.append(Binding(ip_port=str(b["ip_port"]), cert_hash=digest, store=b.get("store", "Root")))
        return out

    def _services(self, is_master: bool, is_worker: bool, over: dict[str, Any]) -> list[dict[str, Any]] | None:
        if over.get("services") == "unknown":
            return None
        rows = []
        for present, service, key in (
            (is_master, MASTER_SERVICE, "master_service"),
            (is_worker, WORKER_SERVICE, "worker_service"),
        ):
            if not present or (key in over and over[key] is None):
                continue
            rows.append(
                {
                    "Name": service,
                    "State": "Running",
                    "StartMode": "Auto",
                    "StartName": f"NT Service\\{service}",
                    **(over.get(key) or {}),
                }
            )
        return rows

    def _host(self, name: str, over: dict[str, Any]) -> dict[str, Any] | None:
        if over.get("host") == "unknown":
            return None
        default = {"fqdn": f"{name.lower()}.{DOMAIN}", "addresses": [self.addresses.get(name, "10.0.9.9")]}
        return {**default, **(over.get("host") or {})}

    def _keys(
        self,
        name: str,
        root: list[str],
        my: list[str],
        is_master: bool,
        is_worker: bool,
        over: dict[str, Any],
    ) -> list[dict[str, Any]] | None:
        if over.get("keys") == "unknown":
            return None
        keyed = dict.fromkeys(my, True)
        if is_master:
            keyed["master"] = True
        keyed.update(over.get("private_key") or {})
        accounts = [f"NT Service\\{s}" for ok, s in ((is_master, MASTER_SERVICE), (is_worker, WORKER_SERVICE)) if ok]
        readers_over = over.get("key_readers") or {}
        rows = []
        for store, certs in (("Root", root), ("My", my)):
            for cert in certs:
                has_key = keyed.get(cert, False) and (store == "My" or cert not in my)
                row: dict[str, Any] = {
                    "Thumbprint": self.cert(cert).thumbprint,
                    "HasPrivateKey": has_key,
                    "PSParentPath": _STORE_PATH.format(store=store),
                }
                if has_key:
                    readers = readers_over.get(cert, [*STOCK_READERS, *accounts])
                    if readers is not None:
                        row["KeyReaders"] = readers
                rows.append(row)
        return rows

    # ------------------------------------------------------------------ the folder and the snapshot

    def write(self, cluster_dir: Path) -> None:
        for name in self.node_names():
            node, over = self.evidence(name)
            node_dir = node.write(cluster_dir)
            for file_name, text in (
                ("MasterSettings.config", over.get("master_config_text")),
                ("WorkerSettings.config", over.get("worker_config_text")),
            ):
                if text is not None:
                    (node_dir / file_name).write_bytes(encode_text(self.fill(text), "utf-8-sig"))
            for file_name, text in (over.get("files") or {}).items():
                (node_dir / file_name).write_bytes(encode_text(self.fill(text), "utf-8-sig"))
            for relative in over.get("delete", []):
                target = node_dir / relative
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()

    def snapshot(self, tmp_path: Path) -> Snapshot:
        cluster_dir = tmp_path / CLUSTER
        self.write(cluster_dir)
        cluster = read_evidence(cluster_dir)
        if self.spec.get("mode") == "live":
            cluster.mode = "live"
        for node in cluster.nodes:
            over = (self.spec.get("nodes") or {}).get(node.name) or {}
            if "collection" in over:
                state = CollectionState(over["collection"]["state"])
                node.collection = Collection(state=state, reason=over["collection"].get("reason"))
            props = (self.spec.get("ssisdb") or {}).get(node.name)
            if props is not None:
                node.ssisdb = SsisDb(master_properties=self.fill(props))
        return Snapshot(clusters=[cluster])
