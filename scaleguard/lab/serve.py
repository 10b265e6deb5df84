"""``scaleguard lab serve``: every node folder of an evidence folder as a WinRM host on 127.0.0.1.

The lab writes the inventory that ``scaleguard audit --inventory`` uses as it is: one port per node,
the transport the lab speaks, and the password *by reference* (an environment variable the caller sets;
the lab takes the same variable as the password its hosts accept). Over HTTPS the lab makes a CA with
``scaleguard.lab.certs``, serves every host a certificate for 127.0.0.1/localhost signed by it, and writes
the CA bundle next to the inventory. State lives in memory until SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scaleguard.lab import DEFAULT_SERVICE_MS
from scaleguard.lab.certs import CertSpec, IssuedCertificate, make_certificate
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.state import LabFaults, LabNode, LabState
from scaleguard.lab.wsman.auth import Accounts
from scaleguard.lab.wsman.host import SimulatedHost
from scaleguard.lab.wsman.server import Acceptor, HostServer, reserve_closed_port
from scaleguard.remoting.inventory import InventoryWriter

PASSWORD_ENV = "SCALEGUARD_LAB_PASSWORD"
LAB_USER = "scaleguard"
LISTEN_ADDRESS = "127.0.0.1"


class LabError(Exception):
    """The lab cannot start (bad evidence folder, faults file, missing password...)."""


@dataclass
class LabOptions:
    evidence: Path
    inventory_out: Path
    latency_ms: int = 0
    exec_ms: int = 0
    service_ms: int = DEFAULT_SERVICE_MS
    https: bool = False
    auth: Literal["basic", "ntlm", "kerberos"] = "basic"
    spn_domain: str = "lab.test"
    port_base: int = 0
    faults: Path | None = None
    timeout_s: float = 120.0


@dataclass
class Lab:
    """A running lab: its state, one server per host, and the acceptor that feeds them."""

    options: LabOptions
    state: LabState
    accounts: Accounts
    stop_event: threading.Event = field(default_factory=threading.Event)
    servers: list[HostServer] = field(default_factory=list)
    closed_ports: list[Any] = field(default_factory=list)
    ports: dict[tuple[str, str], int] = field(default_factory=dict)  # (cluster, node) → port
    ca_bundle: Path | None = None
    _acceptor: Acceptor | None = None

    def start(self) -> None:
        tls = _TlsFactory(self.options.inventory_out.parent) if self.options.https else None
        if tls is not None:
            self.ca_bundle = tls.ca_bundle
        for index, node in enumerate(self.state.nodes()):
            port = self.options.port_base + index if self.options.port_base else 0
            if node.faults.down:
                sock = reserve_closed_port(LISTEN_ADDRESS, port)
                self.closed_ports.append(sock)
                self.ports[(node.cluster, node.name)] = sock.getsockname()[1]
                continue
            host = SimulatedHost(
                node,
                exec_s=self.options.exec_ms / 1000,
                address=f"http://{LISTEN_ADDRESS}:{port}/wsman",
                stop=self.stop_event,
            )
            server = HostServer(
                (LISTEN_ADDRESS, port),
                host,
                accounts=self.accounts,
                auth=self.options.auth,
                latency_s=self.options.latency_ms / 1000,
                tls=tls.context(node.faults.tls_name) if tls is not None else None,
            )
            self.ports[(node.cluster, node.name)] = server.server_address[1]
            self.servers.append(server)
        self._acceptor = Acceptor(self.servers)
        self._acceptor.start()

    def write_inventory(self) -> None:
        transport: dict[str, Any] = {
            "scheme": "https" if self.options.https else "http",
            "auth": self.options.auth,
            "username": LAB_USER,
            "credential": {"env": PASSWORD_ENV},
            "timeout": self.options.timeout_s,
            "operation_timeout": max(1, min(20, int(self.options.timeout_s // 2))),
        }
        if self.ca_bundle is not None:
            transport["ca_bundle"] = str(self.ca_bundle.resolve())
        writer = InventoryWriter(transport=transport)
        for cluster in self.state.clusters:
            masters = [self._entry(n) for n in cluster.nodes if "master" in n.roles()]
            workers = [self._entry(n) for n in cluster.nodes if "master" not in n.roles()]
            if not masters and workers:  # an inventory cluster needs a master: the first node stands in
                masters, workers = workers[:1], workers[1:]
            writer.add_cluster(cluster.name, masters, workers)
        header = (
            f"Written by `scaleguard lab serve` for {self.options.evidence}.\n"
            f"The hosts accept user {LAB_USER!r} with the password in ${PASSWORD_ENV}."
        )
        target = self.options.inventory_out
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(writer.dump(header), encoding="utf-8")
        temporary.replace(target)  # atomic: whoever waits for the file sees a complete inventory

    def _entry(self, node: LabNode) -> dict[str, Any]:
        port = self.ports[(node.cluster, node.name)]
        entry: dict[str, Any] = {"name": node.name, "host": LISTEN_ADDRESS, "port": port}
        if self.options.auth == "kerberos":  # every host listens on 127.0.0.1: the SPN names which one
            entry["transport"] = {"spn_hostname": spn_hostname(node.name, self.options.spn_domain)}
        return entry

    def close(self) -> None:
        self.stop_event.set()
        if self._acceptor is not None:
            self._acceptor.stop()
        for sock in self.closed_ports:
            sock.close()
        self.accounts.cleanup()


class _TlsFactory:
    """The lab CA and one server context per distinct certificate name (all hosts share the default)."""

    def __init__(self, folder: Path) -> None:
        self.ca = make_certificate(
            CertSpec(
                common_names=("scaleguard lab CA",),
                ca=True,
                server_auth=False,
                client_auth=False,
                key_seed=9001,
            )
        )
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_bundle = folder / "lab-ca.pem"
        self.ca_bundle.write_bytes(self.ca.pem())
        self._contexts: dict[str | None, ssl.SSLContext] = {}

    def context(self, name: str | None) -> ssl.SSLContext:
        if name not in self._contexts:
            names, ips, seed = (("localhost",), (LISTEN_ADDRESS,), 9002) if name is None else ((name,), (), 9003)
            spec = CertSpec(common_names=names, san_dns=names, san_ip=ips, client_auth=False, key_seed=seed)
            self._contexts[name] = self._server_context(make_certificate(spec, issuer=self.ca))
        return self._contexts[name]

    def _server_context(self, cert: IssuedCertificate) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # ssl loads a key only from a file: a private folder that is gone once the key is loaded
        with tempfile.TemporaryDirectory(prefix="scaleguard-lab-tls-") as folder:
            pem = Path(folder) / f"{cert.thumbprint}.pem"
            pem.touch(mode=0o600)
            pem.write_bytes(cert.pem() + cert.key_pem())
            context.load_cert_chain(pem)
        return context


def spn_hostname(node: str, domain: str) -> str:
    """The host part of a lab node's SPN (``HTTP/<this>``), which the KDC of a Kerberos lab must know."""
    return f"{node.lower()}.{domain}"


def load_faults(path: Path | None) -> dict[str, LabFaults]:
    """``{"NODE": {"hang": "receive"}, "CLUSTER/NODE": ...}`` (JSON) → per-node faults."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: not a readable JSON faults file ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise LabError(f"{path}: expected an object mapping node names to fault objects")
    try:
        return {str(name): LabFaults.from_dict(value) for name, value in data.items()}
    except (TypeError, ValueError) as exc:
        raise LabError(f"{path}: {exc}") from exc


def start_lab(options: LabOptions) -> Lab:
    """Build the state and listen on every port (the caller writes the inventory when it is ready)."""
    if options.auth == "kerberos" and not os.environ.get("KRB5_KTNAME"):
        raise LabError("--auth kerberos needs KRB5_KTNAME: the keytab with the hosts' HTTP/<host> keys")
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise LabError(
            f"set {PASSWORD_ENV} to the password the lab hosts should accept "
            "(the inventory the lab writes points the audit at the same variable)"
        )
    try:
        state = load_state(options.evidence, load_faults(options.faults), service_s=options.service_ms / 1000)
    except (OSError, ValueError) as exc:
        raise LabError(str(exc)) from exc
    lab = Lab(options=options, state=state, accounts=Accounts(LAB_USER, password))
    try:
        lab.start()
    except OSError as exc:
        lab.close()
        raise LabError(f"cannot listen: {exc}") from exc
    return lab


def serve_forever(options: LabOptions, *, announce: Any = None) -> int:
    """Run the lab in this process until SIGTERM or SIGINT; returns the exit code.

    Order matters to whoever waits for the lab: signal handlers first, then the listeners, the announcement,
    and last the inventory (written atomically), which is the "ready" signal.
    """
    done = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        done.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    lab: Lab | None = None
    try:
        lab = start_lab(options)
        hosts = len(lab.ports)
        scheme = "https" if options.https else "http"
        message = (
            f"lab: {hosts} host(s) on {LISTEN_ADDRESS} ({scheme}, {options.auth}); "
            f"inventory {options.inventory_out}; user {LAB_USER!r}, password from ${PASSWORD_ENV}"
        )
        (announce or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
        lab.write_inventory()
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if lab is not None:
            lab.close()
    return 0
