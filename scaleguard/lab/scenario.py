"""Example clusters as evidence folders: the demo (a few planted defects) and large fleets for benchmarks.

Both are built from one :class:`ClusterBuilder`, so the 1,000-node fleet a benchmark audits has exactly
the shape of the 4-node demo a person reads: a master (``MASTER01``, port 8391, its certificate in Root
with its key, bound in HTTP.sys with ``certstorename=Root``) and workers pinned to it, each with its own
client certificate in My and Root, trusted by the master. Every node also carries what a real Windows
Server carries in LocalMachine\\Root — public root CAs (some still MD5 or SHA-1 signed, one expired, one
ECC) and the company's enterprise root — because policies must not trip over them.

Speed: certificates are real (``scaleguard.lab.certs``), but RSA key generation is the slow part, so
public CAs are made once per run and shared by every node (as they are on real machines), and fleet
workers draw their keys from a small pool (``key_seed``). A 1,000-node fleet takes seconds.

``seed`` makes names, addresses, GUIDs and serial numbers repeatable; dates are always relative to
``now`` so a lab never goes stale, and key material is fresh for every process.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from scaleguard.lab.certs import CertSpec, IssuedCertificate, make_certificate
from scaleguard.lab.evidence import Binding, NodeEvidence, encode_text, powershell_json

DOMAIN = "contoso.local"
SQL_VERSION = "150"
MASTER_SERVICE = f"SSISScaleOutMaster{SQL_VERSION}"
WORKER_SERVICE = f"SSISScaleOutWorker{SQL_VERSION}"
WORKER_ACCOUNT = f"NT Service\\{WORKER_SERVICE}"
MASTER_PORT = 8391
MASTER_ENDPOINT = f"https://master01.{DOMAIN}:{MASTER_PORT}"
APP_ID = "{a1f96506-93e0-4c91-9171-05a2f6739e13}"
STOCK_KEY_READERS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")
MASTER_ADDRESS = "10.0.2.8"
CLUSTER_NAME = "CONTOSO-SSIS"

_ROOT_PATH = "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\{store}"

# (common name, signature hash, key type, valid from (days relative to now), validity in days)
PUBLIC_ROOT_CAS: tuple[tuple[str, str, str, int, int], ...] = (
    ("Microsoft Root Authority", "md5", "rsa", -10_000, 12_000),
    ("Microsoft Root Certificate Authority", "sha1", "rsa", -8_500, 10_000),
    ("Microsoft Root Certificate Authority 2011", "sha256", "rsa", -5_000, 9_000),
    ("Microsoft ECC Root Certificate Authority 2017", "sha384", "ec", -2_600, 9_000),
    ("DigiCert Global Root CA", "sha1", "rsa", -7_000, 9_000),
    ("DigiCert Global Root G2", "sha256", "rsa", -4_300, 9_000),
    ("Baltimore CyberTrust Root", "sha1", "rsa", -9_125, 9_100),  # expired, still shipped in old stores
    ("ISRG Root X1", "sha256", "rsa", -3_400, 7_300),
    ("Thawte Timestamping CA", "md5", "rsa", -9_800, 9_900),
    ("VeriSign Class 3 Public Primary Certification Authority - G5", "sha1", "rsa", -6_900, 11_000),
    ("USERTrust RSA Certification Authority", "sha384", "rsa", -5_500, 10_000),
)


@dataclass(frozen=True)
class PlantedDefect:
    """A deliberate mistake in a lab cluster and the policies that must catch it."""

    node: str
    description: str
    policies: tuple[str, ...]


@dataclass
class Scenario:
    cluster: str
    nodes: list[NodeEvidence]
    defects: list[PlantedDefect] = field(default_factory=list)
    extra_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    """node name → {file name: JSON payload} for files NodeEvidence does not model (schannel with its
    PowerShell nulls, the lab-only ssisdb.json)."""

    def expected_failures(self) -> set[tuple[str, str]]:
        """(policy, node) pairs the planted defects must make fail — and no others."""
        return {(p, d.node) for d in self.defects for p in d.policies}

    def write(self, cluster_dir: Path) -> Path:
        """The evidence folder: one sub-folder per node, and a README.txt a person reads first."""
        cluster_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node_dir = node.write(cluster_dir)
            for file_name, payload in self.extra_files.get(node.name, {}).items():
                (node_dir / file_name).write_bytes(encode_text(powershell_json(payload), "utf-8-sig"))
        (cluster_dir / "README.txt").write_text(self.readme(), encoding="utf-8", newline="\r\n")
        return cluster_dir

    def readme(self) -> str:
        masters = [n.name for n in self.nodes if n.master_settings is not None]
        workers = [n.name for n in self.nodes if n.worker_settings is not None]
        lines = [
            f"scaleguard example evidence folder: cluster {self.cluster}",
            "",
            f"Masters: {', '.join(masters)}   Workers: {len(workers)} ({_span(workers)})",
            "Each node folder holds the files of an evidence folder (see scaleguard's README), written the",
            "way Windows and PowerShell write them:",
            "  MasterSettings.config / WorkerSettings.config  XML, UTF-8 with BOM, CRLF",
            "  sslcert.txt    netsh http show sslcert > sslcert.txt   (UTF-16 LE with BOM)",
            "  certs/Root, certs/My   every certificate of Cert:\\LocalMachine\\Root and \\My, DER .cer",
            "  services.json, keys.json (with the optional KeyReaders column), host.json, schannel.json",
            "  ssisdb.json    lab only: what SSISDB answers when `scaleguard lab serve` serves this folder",
            "",
            "Certificates are real and dated relative to the day this folder was made.",
            "",
        ]
        if not self.defects:
            lines.append("Planted defects: none - every check should pass.")
        else:
            lines.append("Planted defects (what an audit must find):")
            for i, d in enumerate(self.defects, 1):
                lines.append(f"  {i}. {d.node}: {d.description}")
                lines.append(f"     expected failing policies: {', '.join(d.policies)}")
        lines += ["", "Audit it:  scaleguard audit --evidence <this folder> --out <report folder>", ""]
        return "\n".join(lines)


def _span(names: list[str]) -> str:
    if not names:
        return "none"
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"


@dataclass(frozen=True)
class WorkerDefects:
    pins_old_master: bool = False
    expires_in_days: int | None = None
    key_unreadable: bool = False


class ClusterBuilder:
    """Certificates and node evidence for one cluster; shared CA material is made once per builder."""

    def __init__(
        self,
        *,
        seed: int = 0,
        now: datetime | None = None,
        worker_key_pool: int | None = None,
        master_days_left: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = now or datetime.now(UTC)
        self.worker_key_pool = worker_key_pool
        self.master_days_left = master_days_left

    def _spec(self, *names: str, **kwargs: Any) -> CertSpec:
        return CertSpec(common_names=names, serial=self.rng.getrandbits(63) | 1, **kwargs)

    def _cert(self, spec: CertSpec, issuer: IssuedCertificate | None = None) -> IssuedCertificate:
        return make_certificate(spec, issuer=issuer, now=self.now)

    @cached_property
    def public_roots(self) -> list[IssuedCertificate]:
        return [
            self._cert(self._spec(cn, hash=h, key_type=kt, valid_from_days=start, valid_days=days,
                                  server_auth=False, client_auth=False, key_seed=900 + i))
            for i, (cn, h, kt, start, days) in enumerate(PUBLIC_ROOT_CAS)
        ]

    @cached_property
    def enterprise_root(self) -> IssuedCertificate:
        return self._cert(self._spec("Contoso Root CA", valid_from_days=-1_500, valid_days=7_300,
                                     server_auth=False, client_auth=False, key_seed=950))

    @cached_property
    def issuing_ca(self) -> IssuedCertificate:
        """Contoso's issuing CA: belongs in Intermediate CAs, never in Root (the documented 403 cause)."""
        return self._cert(
            self._spec("Contoso Issuing CA 01", valid_from_days=-1_400, valid_days=3_650, server_auth=False,
                       client_auth=False, key_seed=951),
            issuer=self.enterprise_root,
        )

    @cached_property
    def master_cert(self) -> IssuedCertificate:
        """What SQL Server setup makes: self-signed, SHA-1, CNs for the name, FQDN and address."""
        left = self.master_days_left
        start, days = (-200, 730) if left is None else (-730 + left, 730)
        return self._cert(self._spec("MASTER01", f"master01.{DOMAIN}", MASTER_ADDRESS, hash="sha1",
                                     valid_from_days=start, valid_days=days, key_seed=self.seed * 1000 + 1))

    @cached_property
    def old_master_cert(self) -> IssuedCertificate:
        """The master certificate before the last rotation (expired, still in some workers' Root)."""
        return self._cert(self._spec("MASTER01", hash="sha1", valid_from_days=-940, valid_days=730,
                                     key_seed=self.seed * 1000 + 2))

    def worker_cert(
        self, index: int, name: str, address: str, valid_days_left: int | None
    ) -> IssuedCertificate:
        """Setup's worker certificate (MakeCert style: CN=name;CN=address), for client authentication."""
        pool = self.worker_key_pool
        key_seed = self.seed * 1000 + 10 + (index % pool if pool else index)
        start, days = (-120, 730) if valid_days_left is None else (-340, 340 + valid_days_left)
        return self._cert(self._spec(name, address, valid_from_days=start, valid_days=days, server_auth=False,
                                     key_seed=key_seed))

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # --- nodes ----------------------------------------------------------------------------------------

    def worker(
        self, index: int, name: str, defects: WorkerDefects = WorkerDefects()
    ) -> tuple[NodeEvidence, IssuedCertificate]:
        address = f"10.0.{3 + index // 250}.{10 + index % 250}"
        own = self.worker_cert(index, name, address, defects.expires_in_days)
        pinned = self.old_master_cert if defects.pins_old_master else self.master_cert
        root = [*self.public_roots, self.enterprise_root, self.master_cert, own]
        if defects.pins_old_master:
            root.append(self.old_master_cert)
        readers = [*STOCK_KEY_READERS]
        if not defects.key_unreadable:
            readers.append(f"NT SERVICE\\{WORKER_SERVICE}")  # how Get-Acl spells virtual accounts
        node = NodeEvidence(
            name=name,
            worker_settings=worker_settings(name, master_thumbprint=pinned.thumbprint,
                                            worker_thumbprint=own.thumbprint, agent_id=self.guid()),
            root=root,
            my=[own],
            bindings=[],
            services=[service(WORKER_SERVICE)],
            keys=key_rows(root=root, my=[own], keyed={own.thumbprint: readers}),
            host={"fqdn": f"{name.lower()}.{DOMAIN}", "addresses": [address]},
        )
        return node, own

    def master(
        self, worker_certs: Iterable[IssuedCertificate], *, binding_store: str | None = "Root",
        issuing_ca_in_root: bool = False,
    ) -> NodeEvidence:
        root = [*self.public_roots, self.enterprise_root, self.master_cert, *worker_certs]
        if issuing_ca_in_root:
            root.append(self.issuing_ca)
        readers = {self.master_cert.thumbprint: [*STOCK_KEY_READERS, f"NT SERVICE\\{MASTER_SERVICE}"]}
        return NodeEvidence(
            name="MASTER01",
            master_settings=master_settings(self.master_cert.thumbprint),
            root=root,
            my=[],
            bindings=[Binding(f"0.0.0.0:{MASTER_PORT}", self.master_cert.thumbprint, APP_ID, binding_store)],
            services=[service(MASTER_SERVICE)],
            keys=key_rows(root=root, my=[], keyed=readers),
            host={"fqdn": f"master01.{DOMAIN}", "addresses": [MASTER_ADDRESS]},
        )

    def master_extras(self, worker_names: Iterable[str]) -> dict[str, Any]:
        """schannel.json as PowerShell exports absent registry values (nulls), and the lab's ssisdb.json."""
        return {
            "schannel.json": {"ClientAuthTrustMode": None, "SendTrustedIssuerList": None},
            "ssisdb.json": {
                "master_properties": {
                    "SSLCERT_THUMBPRINT": self.master_cert.thumbprint,
                    "MASTER_SERVICE_PORT": str(MASTER_PORT),
                    "MACHINE_NAME": "MASTER01",
                    "MACHINE_IP": MASTER_ADDRESS,
                    "MASTER_ADDRESS": MASTER_ENDPOINT,
                    "CLUSTER_LOGDB_SERVER": "MASTER01",
                },
                "worker_agents": [
                    {"WorkerAgentId": self.guid(), "MachineName": n, "DisplayName": n, "IsEnabled": True,
                     "LastOnlineTime": self.now.isoformat(timespec="seconds")}
                    for n in worker_names
                ],
            },
        }


def master_settings(thumbprint: str) -> dict[str, str | int]:
    return {
        "PortNumber": MASTER_PORT,
        "SSLCertThumbprint": thumbprint,
        "SqlServerName": "MASTER01",
        "CleanupCompletedJobsIntervalInMs": 43_200_000,
        "DealWithExpiredTasksIntervalInMs": 300_000,
        "MasterHeartbeatIntervalInMs": 30_000,
        "SqlConnectionTimeoutInSecs": 15,
    }


def worker_settings(
    name: str, *, master_thumbprint: str, worker_thumbprint: str, agent_id: str
) -> dict[str, str | int]:
    return {
        "DisplayName": name,
        "Description": "",
        "MasterEndpoint": MASTER_ENDPOINT,
        "MasterHttpsCertThumbprint": master_thumbprint,
        "WorkerHttpsCertThumbprint": worker_thumbprint,
        "StoreLocation": "LocalMachine",
        "StoreName": "My",
        "AgentHeartbeatInterval": "00:01:00",
        "TaskHeartbeatInterval": "00:00:10",
        "HeartbeatErrorTolerance": "00:10:00",
        "TaskRequestMaxCPU": "70.0",
        "TaskRequestMinMemory": "100.0",
        "MaxTaskCount": 10,
        "LeaseInterval": "00:01:00",
        "TasksRootFolder": "",
        "TaskLogLevel": 126,
        "TaskLogSegment": "00:00:00",
        "TaskLogEnabled": "true",
        "ExecutionLogCacheFolder": "",
        "ExecutionLogMaxBufferLogCount": 10_000,
        "ExecutionLogMaxInMemoryBufferCount": 10,
        "ExecutionLogRetryCount": 3,
        "ExecutionLogRetryTimeout": "7.00:00:00",
        "AgentId": agent_id,
    }


def service(name: str) -> dict[str, Any]:
    """A ``Get-CimInstance Win32_Service`` row (Windows prints the virtual account as ``NT Service\\..``)."""
    return {"Name": name, "State": "Running", "StartMode": "Auto", "StartName": f"NT Service\\{name}"}


def key_rows(
    *, root: list[IssuedCertificate], my: list[IssuedCertificate], keyed: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """keys.json: one row per certificate per store. Only My certificates and the master's own Root
    certificate have a private key; a public part imported from a ``.cer`` never does."""
    in_my = {c.thumbprint for c in my}
    rows: list[dict[str, Any]] = []
    for store, certs in (("Root", root), ("My", my)):
        for cert in certs:
            created_here = store == "My" or cert.thumbprint not in in_my
            readers = keyed.get(cert.thumbprint) if created_here else None
            row: dict[str, Any] = {
                "Thumbprint": cert.thumbprint,
                "HasPrivateKey": readers is not None,
                "PSParentPath": _ROOT_PATH.format(store=store),
            }
            if readers is not None:
                row["KeyReaders"] = readers
            rows.append(row)
    return rows


# --- the two scenarios --------------------------------------------------------------------------------

def demo_scenario(
    workers: int = 3, *, seed: int = 0, now: datetime | None = None, defects: bool = True
) -> Scenario:
    """MASTER01 and ``workers`` workers; with ``defects``, four planted mistakes (see README.txt)."""
    if not defects:
        return _cluster(ClusterBuilder(seed=seed, now=now), workers, {})
    on_master = [
        PlantedDefect("MASTER01", "the HTTP.sys binding 0.0.0.0:8391 has Certificate Store Name (null), i.e. MY, "
                      "while the master certificate lives in Root", ("SO-M06",)),
        PlantedDefect("MASTER01", "Contoso Issuing CA 01 (not self-signed) was imported into the master's Root "
                      "and neither ClientAuthTrustMode=2 nor SendTrustedIssuerList=0 is set (workers get HTTP 403)",
                      ("SO-M11",)),
    ]
    on_workers = {
        1: (WorkerDefects(pins_old_master=True), "WorkerSettings.config still pins the master certificate from "
            "before the last rotation (MasterHttpsCertThumbprint = the old, expired certificate, which is still "
            "in its Root)", ("SO-W02",)),
        2: (WorkerDefects(expires_in_days=20, key_unreadable=True), "its worker certificate expires in 20 days, "
            "and NT Service\\SSISScaleOutWorker150 cannot read its private key (KeyReaders lists only SYSTEM and "
            "Administrators)", ("SO-W09", "SO-W10")),
    }
    return _cluster(ClusterBuilder(seed=seed, now=now), workers, on_workers, on_master=on_master,
                    binding_store=None, issuing_ca_in_root=True)


def fleet_scenario(
    workers: int = 999, *, seed: int = 0, now: datetime | None = None, defect_every: int = 97,
    key_pool: int = 8, master_days_left: int | None = None,
) -> Scenario:
    """1 master + ``workers`` workers, ~15 certificates per worker, for benchmarks.

    Every ``defect_every``-th worker carries one of the demo's worker defects in turn (0 = none), so the
    reports of a big fleet have something to show. Worker keys come from a pool of ``key_pool`` keys.
    ``master_days_left`` makes the master certificate expire that soon (the fix benchmark rotates it).
    """
    builder = ClusterBuilder(seed=seed, now=now, worker_key_pool=key_pool, master_days_left=master_days_left)
    kinds = (
        (WorkerDefects(pins_old_master=True), "pins the old master thumbprint", ("SO-W02",)),
        (WorkerDefects(expires_in_days=20), "worker certificate expires in 20 days", ("SO-W10",)),
        (WorkerDefects(key_unreadable=True), "worker service cannot read its key", ("SO-W09",)),
    )
    every = range(defect_every - 1, workers, defect_every) if defect_every else range(0)
    return _cluster(builder, workers, {index: kinds[turn % len(kinds)] for turn, index in enumerate(every)})


_Planted = tuple[WorkerDefects, str, tuple[str, ...]]


def _cluster(
    builder: ClusterBuilder, workers: int, on_workers: dict[int, _Planted], *,
    on_master: Iterable[PlantedDefect] = (), binding_store: str | None = "Root", issuing_ca_in_root: bool = False,
) -> Scenario:
    """MASTER01 and WORKER01.. (more digits for big fleets); ``on_workers[index]`` plants a worker's defects."""
    width = max(2, len(str(workers)))
    names = [f"WORKER{i:0{width}d}" for i in range(1, workers + 1)]
    planted = list(on_master)
    nodes: list[NodeEvidence] = []
    certs: list[IssuedCertificate] = []
    for index, name in enumerate(names):
        wd, what, policies = on_workers.get(index, (WorkerDefects(), "", ()))
        if what:
            planted.append(PlantedDefect(name, what, policies))
        node, cert = builder.worker(index, name, wd)
        nodes.append(node)
        certs.append(cert)
    master = builder.master(certs, binding_store=binding_store, issuing_ca_in_root=issuing_ca_in_root)
    return Scenario(CLUSTER_NAME, [master, *nodes], planted, {master.name: builder.master_extras(names)})
