"""What a simulated Windows node *is*: the raw material its agent would read, held in memory.

The lab server (``scaleguard lab serve``) keeps one :class:`LabNode` per node folder of an evidence folder
and answers every agent request from it, so a fix applied through WinRM is seen by the next audit. The
state is deliberately *raw* (config file bytes, certificate DER, registry-shaped bindings): the lab must
never pre-judge what the parsers and policies are there to judge. It is built by
:mod:`scaleguard.lab.from_evidence` from what the project's own evidence reader read, and answered by the
handlers listed in :mod:`scaleguard.lab.dispatch`.

The model is never kinder than Windows (``docs/windows-conformance.md``, "Lab state"): a fact the evidence
did not carry stays *unknown* (``None``) and an action that would need it is refused; the store copies of
a certificate that link to a private key share one :class:`LabKey`; a service takes ``service_s`` seconds
to reach the state it was asked for, and reads as ``Start Pending``/``Stop Pending`` meanwhile.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from scaleguard.collectors.parsers.config import parse_config
from scaleguard.rules.thumbprint import normalize_thumbprint

DEFAULT_SQL_VERSION = "150"
SQL_VERSIONS = ("140", "150", "160")
DEFAULT_APP_ID = "{a1f96506-93e0-4c91-9171-05a2f6739e13}"
CONFIG_DIR = "C:\\Program Files\\Microsoft SQL Server\\{version}\\DTS\\Binn"
MACHINE_KEYS_DIR = "C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys"
CNG_KEYS_DIR = "C:\\ProgramData\\Microsoft\\Crypto\\Keys"
# Who can read a machine key on a stock node, besides the service that uses it.
ALWAYS_KEY_READERS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")
# Win32_Service.State while the Service Control Manager waits for the service to get there.
PENDING_STATES = {"Running": "Start Pending", "Stopped": "Stop Pending"}

Role = Literal["master", "worker"]
CONFIG_FILES: dict[Role, str] = {"master": "MasterSettings.config", "worker": "WorkerSettings.config"}
KeyProvider = Literal["capi", "cng"]


class ActionError(Exception):
    """A request the simulated node refuses: reported like a PowerShell error (stderr, exit code 1).

    ``ends_at`` is the monotonic time the agent would report it (a wait that timed out ends late)."""

    def __init__(self, message: str, *, ends_at: float = 0.0) -> None:
        super().__init__(message)
        self.ends_at = ends_at


class PartialChangeError(ActionError):
    """The action changed something and could neither finish nor undo it: exit code 3, with ``result``
    (what was there before) on stdout as ``{"partial": true, "result": ...}``, as actions.ps1 reports it."""

    def __init__(self, message: str, result: dict[str, Any] | None, *, ends_at: float = 0.0) -> None:
        super().__init__(f"partial change: {message}", ends_at=ends_at)
        self.result = result


SECRET_KEY = "\x00secret"
"""Where the lab host puts the payload's secret (the bootstrap's ``$ScaleguardSecret``) in a request: a key
no JSON the agent parses may carry (the host removes it from every parsed request first)."""


@dataclass(eq=False)
class LabKey:
    """One private-key container: a file under MachineKeys (CAPI) or Crypto\\Keys (CNG).

    Windows keeps one key file behind every store copy of a certificate that links to it, so deleting the
    key or changing its ACL through one copy changes it for all of them: the copies share this object.
    ``readers`` is None when the evidence did not export the ACL (unknown, not "nobody").
    """

    name: str
    provider: KeyProvider
    readers: list[str] | None
    deleted: bool = False
    denied: list[str] = field(default_factory=list)  # accounts a Deny ACE keeps from reading (Deny wins)

    @property
    def file(self) -> str:
        return f"{CNG_KEYS_DIR if self.provider == 'cng' else MACHINE_KEYS_DIR}\\{self.name}"


@dataclass(eq=False)
class LabCert:
    """One certificate in a LocalMachine store, as the agent sees it.

    ``key`` is the container this copy links to (None: no private key). ``key_known`` is False when the
    evidence did not say whether the copy has a key (no keys.json row): the agent then reports it unknown.
    """

    der: bytes
    key: LabKey | None = None
    key_known: bool = True
    friendly_name: str = ""
    thumbprint: str = field(init=False)

    def __post_init__(self) -> None:
        self.thumbprint = hashlib.sha1(self.der, usedforsecurity=False).hexdigest().upper()

    @property
    def has_private_key(self) -> bool | None:
        """``X509Certificate2.HasPrivateKey``: the copy links to a key (even one deleted since)."""
        return (self.key is not None) if self.key_known else None

    @property
    def usable_key(self) -> LabKey | None:
        """The key, if it exists: a link to a deleted container is "Keyset does not exist" on Windows."""
        return self.key if self.key is not None and not self.key.deleted else None


@dataclass
class LabBinding:
    """One ``SslBindingInfo`` registry key: ``store`` None means the value is absent (HTTP.sys uses MY)."""

    ip_port: str
    cert_hash: str | None
    app_id: str | None = DEFAULT_APP_ID
    store: str | None = "Root"
    kind: Literal["ipport", "hostnameport", "ccs"] = "ipport"


class LabService:
    """One Windows service. ``state``/``start_mode`` are Win32_Service's words; None means unknown.

    A requested change is not instant: :meth:`change` starts a transition that ends ``duration`` seconds
    later, and until then :attr:`state` reads as the pending state Windows shows.
    """

    def __init__(
        self,
        name: str,
        state: str | None = None,
        start_mode: str | None = None,
        account: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.start_mode = start_mode
        self.account = account
        self._clock = clock
        self._settled = state
        self._phases: list[tuple[float, str]] = []  # (time reached, state reached), in order

    def _settle(self) -> None:
        now = self._clock()
        while self._phases and self._phases[0][0] <= now:
            self._settled = self._phases.pop(0)[1]

    @property
    def state(self) -> str | None:
        self._settle()
        if self._phases:
            return PENDING_STATES.get(self._phases[0][1], "Unknown")
        return self._settled

    @state.setter
    def state(self, value: str | None) -> None:
        """Set the state at once (for tests and the evidence); actions use :meth:`change`."""
        self._phases.clear()
        self._settled = value

    @property
    def settles_at(self) -> float:
        """When the last requested transition is over (0 when none is under way)."""
        return self._phases[-1][0] if self._phases else 0.0

    def change(self, target: Literal["Running", "Stopped"], duration: float, not_before: float = 0.0) -> float:
        """Begin moving to ``target`` after any transition under way (and not before ``not_before``);
        returns when it is reached."""
        start = max(self._clock(), self.settles_at, not_before)
        reached = start + max(0.0, duration)
        self._phases.append((reached, target))
        self._settle()
        return reached

    def __repr__(self) -> str:
        return f"LabService({self.name!r}, state={self.state!r}, start_mode={self.start_mode!r})"


@dataclass
class LabSchannel:
    """``HKLM\\...\\SecurityProviders\\SCHANNEL`` values; None means the value does not exist."""

    client_auth_trust_mode: int | None = None
    send_trusted_issuer_list: int | None = None


@dataclass
class LabSsisDb:
    """What SSISDB answers on a master; one object per cluster, shared by its masters (one database)."""

    master_properties: dict[str, str] = field(default_factory=dict)
    worker_agents: list[dict[str, Any]] = field(default_factory=list)
    source: str = "ssisdb.json"  # or the healthy default the lab made (README: lab defaults)


@dataclass
class LabFaults:
    """Misbehaviour injected per node for tests (``lab serve --faults FILE``); all off by default.

    - ``down``: nothing listens on the node's port (host down).
    - ``hang``: ``"receive"`` — commands never finish (every Receive long-polls into an OperationTimeout
      fault); ``"http"`` — requests are read but never answered.
    - ``expired_shells``: the first N shells opened on the node expire right after their first Command, so
      the Receive meets fault 2150858843 (what IdleTimeout or a WinRM restart does on a real host).
    - ``quota_faults``: the first N Commands get the ERROR_WSMAN_QUOTA_MAX_OPERATIONS fault (0x803381A6),
      as the leaking operation counter of a long-lived shell does.
    - ``malformed_output``: the agent prints something that is not its JSON document.
    - ``password``: the node expects this password instead of the lab's (a wrong-password host).
    - ``tls_name``: on HTTPS the node presents a certificate for this name only (name mismatch).
    - ``fail_ops``: op name → how many of the next requests with that op fail before changing anything
      (the fix engine's rollback tests: ``{"set_binding": 1}`` makes the first binding change fail).
    - ``locked_files``: paths another process holds open without write sharing: replacing them fails as
      ``File.Replace`` does (a sharing violation), and nothing changes.
    - ``stuck_services``: services that never reach Running after a start (they stay StartPending).
    - ``untrusted_backup_folder``: scaleguard's backup folder was pre-created by an ordinary user, so
      every backup and restore is refused.
    - ``language_mode``: PowerShell runs in this mode (``ConstrainedLanguage`` under AppLocker/WDAC); any
      other than ``FullLanguage`` makes the bootstrap refuse every request (exit code 4).
    """

    down: bool = False
    hang: Literal["receive", "http"] | None = None
    expired_shells: int = 0
    quota_faults: int = 0
    malformed_output: bool = False
    password: str | None = None
    tls_name: str | None = None
    fail_ops: dict[str, int] = field(default_factory=dict)
    locked_files: list[str] = field(default_factory=list)
    stuck_services: list[str] = field(default_factory=list)
    untrusted_backup_folder: bool = False
    language_mode: str = "FullLanguage"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabFaults:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            listed = ", ".join(sorted(known))
            raise ValueError(f"unknown lab fault(s): {', '.join(unknown)} (known: {listed})")
        faults = cls(**data)
        if faults.hang not in (None, "receive", "http"):
            raise ValueError(f"hang must be 'receive' or 'http', not {faults.hang!r}")
        return faults


@dataclass
class LabNode:
    """One simulated Windows host. Mutate it only while holding ``lock``.

    A store or the binding list is None when the evidence could not tell what it holds: the agent then
    reports it unreadable, and an action on it is refused.
    """

    name: str
    cluster: str
    fqdn: str | None = None
    addresses: list[str] | None = None
    sql_version: str = DEFAULT_SQL_VERSION
    master_config: bytes | None = None
    worker_config: bytes | None = None
    root: list[LabCert] | None = field(default_factory=list)
    my: list[LabCert] | None = field(default_factory=list)
    key_containers: dict[str, LabKey] = field(default_factory=dict)
    bindings: list[LabBinding] | None = field(default_factory=list)  # None: SslBindingInfo unknown
    services: list[LabService] | None = field(default_factory=list)
    schannel: LabSchannel | None = field(default_factory=LabSchannel)
    ssisdb: LabSsisDb | None = None
    service_s: float = 0.0  # how long a service takes to start or stop (`lab serve --service-ms`)
    busy_until: float = 0.0  # when the request being handled is over (a service wait); see dispatch
    # (monotonic time, service, "stop"|"start"): when each service stopped serving and served again
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    lease: dict[str, Any] | None = None  # the cluster lease a fix run holds (masters only; see lab.actions)
    runbook_marks: set[str] = field(default_factory=set)  # HKLM\SOFTWARE\scaleguard\Runbook value names
    files: dict[str, bytes] = field(default_factory=dict)  # other files on the node (backups, .cer files)
    journal: list[dict[str, Any]] = field(default_factory=list)  # what actions did, for tests and humans
    faults: LabFaults = field(default_factory=LabFaults)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def config_path(self, role: Role) -> str:
        return CONFIG_DIR.format(version=self.sql_version) + "\\" + CONFIG_FILES[role]

    def config(self, role: Role) -> bytes | None:
        return self.master_config if role == "master" else self.worker_config

    def set_config(self, role: Role, content: bytes) -> None:
        if role == "master":
            self.master_config = content
        else:
            self.worker_config = content

    def store(self, name: str) -> list[LabCert]:
        if name.lower() not in ("root", "my"):
            raise ActionError(f"no certificate store LocalMachine\\{name} on {self.name}")
        certs = self.root if name.lower() == "root" else self.my
        if certs is None:
            raise ActionError(
                f"the lab does not know what LocalMachine\\{name} holds on {self.name} (not in the evidence)"
            )
        return certs

    def find_cert(self, store: str, thumbprint: str | None) -> LabCert | None:
        wanted = normalize_thumbprint(thumbprint)
        return next((c for c in self.store(store) if c.thumbprint == wanted), None) if wanted else None

    def new_key(self, thumbprint: str, provider: KeyProvider, readers: list[str] | None) -> LabKey:
        """A new key container (its file name unique on the node, as Windows makes one per import)."""
        stem = thumbprint.lower()
        name = f"{stem}_lab{len([k for k in self.key_containers if k.startswith(stem)])}"
        key = LabKey(name=name, provider=provider, readers=readers)
        self.key_containers[name] = key
        return key

    def service(self, name: str) -> LabService | None:
        return next((s for s in self.services or [] if s.name.lower() == name.lower()), None)

    def service_name(self, role: Role) -> str:
        return f"SSISScaleOut{'Master' if role == 'master' else 'Worker'}{self.sql_version}"

    def change_service(self, service: LabService, target: Literal["Running", "Stopped"]) -> float:
        """Start a transition taking ``service_s``; the request ends when it is over (the agent waits).

        A master service that starts publishes the certificate its settings file names into SSISDB
        (``catalog.master_properties`` SSLCERT_THUMBPRINT), which is what SO-C03 compares."""
        reached = service.change(target, self.service_s, not_before=self.busy_until)
        self.busy_until = max(self.busy_until, reached)
        if target == "Stopped":
            self.timeline.append((reached - self.service_s, service.name, "stop"))
        else:
            self.timeline.append((reached, service.name, "start"))
        if target == "Running" and service.name.lower() == self.service_name("master").lower():
            self._publish_master_thumbprint()
        return reached

    def _publish_master_thumbprint(self) -> None:
        if self.ssisdb is None or self.master_config is None:
            return
        config = parse_config(self.master_config, "MasterSettings.config", kind="master")
        thumbprint = normalize_thumbprint(config.get("SSLCertThumbprint"))
        if thumbprint is not None:
            self.ssisdb.master_properties["SSLCERT_THUMBPRINT"] = thumbprint

    def binding(self, ip_port: str) -> LabBinding | None:
        return next((b for b in self.bindings or [] if b.ip_port.lower() == ip_port.lower()), None)

    def roles(self) -> list[Role]:
        return [role for role in CONFIG_FILES if self.config(role) is not None]


@dataclass
class LabCluster:
    name: str
    nodes: list[LabNode] = field(default_factory=list)


@dataclass
class LabState:
    clusters: list[LabCluster] = field(default_factory=list)

    def nodes(self) -> Iterator[LabNode]:
        for cluster in self.clusters:
            yield from cluster.nodes

    def named(self, name: str, cluster: str | None = None) -> list[LabNode]:
        """The nodes called ``name`` (in ``cluster`` when given; node names repeat across clusters)."""
        return [
            n for n in self.nodes()
            if n.name.lower() == name.lower() and (cluster is None or n.cluster.lower() == cluster.lower())
        ]

    def node(self, name: str, cluster: str | None = None) -> LabNode | None:
        return next(iter(self.named(name, cluster)), None)


ActionHandler = Callable[[LabNode, dict[str, Any]], dict[str, Any]]
"""One op's handler: runs under ``node.lock``, changes the node completely or not at all."""
