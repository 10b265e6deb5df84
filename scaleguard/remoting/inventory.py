"""The live-audit inventory (YAML): which clusters, which nodes, and how to reach them.

```yaml
defaults:
  transport:                   # every key optional; clusters and nodes override key by key
    scheme: https              # http | https (default https)
    port: 5986                 # default 5985 for http, 5986 for https
    auth: ntlm                 # basic | ntlm | kerberos | negotiate | certificate (default ntlm)
    ca_bundle: certs/ca.pem    # PEM bundle to validate the node certificates (relative to this file)
    username: CORP\\auditor
    credential: {env: SCALEGUARD_PASSWORD}   # or {keyring: service-name} or {prompt: true}
    client_cert: auditor.pem   # certificate auth only, with client_key
    client_key: auditor.key
    timeout: 120               # hard per-host deadline in seconds
    operation_timeout: 20      # WS-Man OperationTimeout of one long poll
    spn_service: HTTP          # kerberos/negotiate: the SPN is <spn_service>/<spn_hostname or host>
    spn_hostname: ssis-m1.corp.example   # when the host is an IP or an alias the KDC does not know
    delegate: false            # kerberos/negotiate: forward the ticket (second hop; trust the host first)
    message_encryption: auto   # auto (WinRM encryption over http) | never
    allow_unencrypted: false   # true: accept Basic (or message_encryption never) over http to a remote host
clusters:
  - name: prod
    transport: {port: 5986}
    masters:                   # one or more (an HA/FCI pair is two)
      - ssis-m1.corp.example   # a bare host; the node name is the host's first DNS label
    workers:
      - {host: 10.0.2.8, name: SSIS-W1, port: 5986, transport: {timeout: 300}}
```

The file names *where* a password is, never the password: a ``password`` key anywhere, or a literal string
as ``credential``, is refused. Every mistake is reported with ``file:line`` and all of them at once, so
fixing an inventory is one round trip.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from scaleguard.remoting import ansible_inventory
from scaleguard.remoting.errors import InventoryError
from scaleguard.safefile import MIB, read_limited

Scheme = Literal["http", "https"]
AuthMethod = Literal["basic", "ntlm", "kerberos", "negotiate", "certificate"]
MessageEncryption = Literal["auto", "never"]
Role = Literal["master", "worker"]

SCHEMES: tuple[Scheme, ...] = ("http", "https")
AUTH_METHODS: tuple[AuthMethod, ...] = ("basic", "ntlm", "kerberos", "negotiate", "certificate")
SPNEGO_AUTH = ("kerberos", "negotiate")
MESSAGE_ENCRYPTION: tuple[MessageEncryption, ...] = ("auto", "never")
DEFAULT_PORTS = {"http": 5985, "https": 5986}
_SECRET_WORDS = ("password", "passwd", "pwd", "secret")


@dataclass(frozen=True)
class CredentialRef:
    """Where a password comes from; the value itself is only fetched at collection time."""

    kind: Literal["env", "keyring", "prompt"]
    name: str | None = None


@dataclass(frozen=True)
class Transport:
    scheme: Scheme = "https"
    port: int | None = None
    auth: AuthMethod = "ntlm"
    ca_bundle: Path | None = None
    username: str | None = None
    credential: CredentialRef | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout: float = 120.0
    operation_timeout: int = 20
    spn_service: str = "HTTP"
    spn_hostname: str | None = None
    delegate: bool = False
    message_encryption: MessageEncryption = "auto"
    allow_unencrypted: bool = False

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.scheme]

    @property
    def unencrypted(self) -> bool:
        """Whether WinRM messages travel readable: plain HTTP with Basic (always), or with NTLM/Kerberos/
        Negotiate when message encryption is turned off. Over HTTPS, TLS covers every method; over HTTP,
        NTLM/Kerberos/Negotiate seal each message with the session key (MS-WSMV §2.2.9.1)."""
        if self.scheme == "https":
            return False
        return self.auth == "basic" or self.message_encryption == "never"


TRANSPORT_KEYS = tuple(f.name for f in fields(Transport))


@dataclass(frozen=True)
class InventoryNode:
    name: str
    host: str
    roles: tuple[Role, ...]
    transport: Transport

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.scheme}://{host}:{self.transport.effective_port}/wsman"

    @property
    def loopback(self) -> bool:
        """Traffic to this host never leaves the machine (127.0.0.0/8, ::1, localhost)."""
        host = self.host.strip("[]").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def travels_unencrypted(self) -> bool:
        """Readable WinRM traffic crosses a network (only allowed by ``allow_unencrypted: true``)."""
        return self.transport.unencrypted and not self.loopback


@dataclass(frozen=True)
class InventoryCluster:
    name: str
    nodes: tuple[InventoryNode, ...]

    @property
    def masters(self) -> list[InventoryNode]:
        return [n for n in self.nodes if "master" in n.roles]

    @property
    def workers(self) -> list[InventoryNode]:
        return [n for n in self.nodes if "worker" in n.roles]

    def knows(self, machine_name: str) -> bool:
        """Whether a machine SSISDB names is one of this cluster's nodes (by name, host or first label)."""
        wanted = machine_name.strip().lower()
        short = wanted.split(".", 1)[0]
        for node in self.nodes:
            for known in (node.name.lower(), node.host.lower()):
                if wanted == known or short == known.split(".", 1)[0]:
                    return True
        return False


@dataclass(frozen=True)
class Inventory:
    path: Path
    clusters: tuple[InventoryCluster, ...]

    def nodes(self) -> list[tuple[InventoryCluster, InventoryNode]]:
        return [(c, n) for c in self.clusters for n in c.nodes]


def load_inventory(path: Path) -> Inventory:
    """Parse and check ``path``; raises :class:`InventoryError` listing every problem found."""
    try:
        text = read_limited(path, 16 * MIB, named=True).decode("utf-8-sig")
    except OSError as exc:
        raise InventoryError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: is not UTF-8 text") from exc
    if ansible_inventory.looks_like_ansible(text):
        return _read_ansible(path, text)
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InventoryError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    return _Reader(path).read(document)


def _read_ansible(path: Path, text: str) -> Inventory:
    """An Ansible inventory, converted and then read by the native reader, so both formats obey the same
    rules. The native reader's ``file:line`` would point into the converted document: its messages keep
    the file name and lose the line (they name the cluster and host instead)."""
    dumped = yaml.safe_dump(ansible_inventory.native_document(path, text), sort_keys=False)
    try:
        return _Reader(path).read(yaml.compose(dumped, Loader=yaml.SafeLoader))
    except InventoryError as exc:
        prefix = re.compile(rf"^{re.escape(str(path))}:[0-9]+:", re.MULTILINE)
        raise InventoryError(prefix.sub(f"{path}:", str(exc))) from None


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.errors: list[str] = []

    # -- reporting ---------------------------------------------------------------------------------

    def error(self, node: yaml.Node | None, message: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.errors.append(f"{self.path}{line}: {message}")

    # -- YAML node helpers ---------------------------------------------------------------------------

    def mapping(self, node: yaml.Node, what: str, known: tuple[str, ...]) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.error(key_node, f"{what}: keys must be names")
                continue
            if any(word in key.lower() for word in _SECRET_WORDS):
                self.error(
                    key_node,
                    f"{what}: '{key}' looks like a password; the inventory must not hold "
                    "secrets — use credential: {{env: VAR}}, {{keyring: SERVICE}} or {{prompt: true}}",
                )
                continue
            if key not in known:
                self.error(key_node, f"{what}: unknown key '{key}' (known: {', '.join(known)})")
                continue
            if key in result:
                self.error(key_node, f"{what}: '{key}' is given twice")
                continue
            result[key] = value_node
        return result

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what} must be a single value")
            return None
        constructor = yaml.SafeLoader("")
        try:
            return constructor.construct_object(node)
        finally:
            constructor.dispose()

    def text(self, node: yaml.Node, what: str) -> str | None:
        value = self.scalar(node, what)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
            self.error(node, f"{what} must be a non-empty text")
            return None
        return str(value).strip()

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    # -- document ------------------------------------------------------------------------------------

    def read(self, document: yaml.Node | None) -> Inventory:
        if document is None:
            raise InventoryError(f"{self.path}: is empty (expected 'clusters:')")
        top = self.mapping(document, "inventory", ("version", "defaults", "clusters"))
        clusters: list[InventoryCluster] = []
        if top is not None:
            if "version" in top and self.scalar(top["version"], "version") != 1:
                self.error(top["version"], "version must be 1")
            defaults = Transport()
            if "defaults" in top:
                section = self.mapping(top["defaults"], "defaults", ("transport",))
                if section and "transport" in section:
                    defaults = self.transport(section["transport"], defaults, "defaults.transport")
            if "clusters" not in top:
                self.error(document, "no 'clusters:' list")
            else:
                nodes = self.sequence(top["clusters"], "clusters")
                if not nodes and isinstance(top["clusters"], yaml.SequenceNode | yaml.ScalarNode):
                    self.error(top["clusters"], "clusters is empty")
                clusters = [c for c in (self.cluster(n, defaults) for n in nodes) if c is not None]
            self.check_unique_clusters(clusters, top.get("clusters"))
        if self.errors:
            raise InventoryError("\n".join(self.errors))
        return Inventory(path=self.path, clusters=tuple(clusters))

    def check_unique_clusters(self, clusters: list[InventoryCluster], node: yaml.Node | None) -> None:
        seen: set[str] = set()
        for cluster in clusters:
            if cluster.name.lower() in seen:
                self.error(node, f"cluster '{cluster.name}' is given twice")
            seen.add(cluster.name.lower())

    def cluster(self, node: yaml.Node, defaults: Transport) -> InventoryCluster | None:
        section = self.mapping(node, "cluster", ("name", "transport", "masters", "workers"))
        if section is None:
            return None
        name = self.text(section["name"], "cluster name") if "name" in section else None
        if name is None:
            if "name" not in section:
                self.error(node, "cluster without a name")
            return None
        what = f"cluster '{name}'"
        transport = defaults
        if "transport" in section:
            transport = self.transport(section["transport"], defaults, f"{what} transport")
        nodes: dict[str, InventoryNode] = {}
        for role in ("master", "worker"):
            key = f"{role}s"
            for entry in self.sequence(section[key], f"{what} {key}") if key in section else []:
                parsed = self.node(entry, role, transport, what)
                if parsed is not None:
                    self.merge(nodes, parsed, entry, what)
        if not any("master" in n.roles for n in nodes.values()):
            self.error(node, f"{what} has no masters (a cluster needs one or more)")
        self.check_credentials(nodes.values(), node, what)
        return InventoryCluster(name=name, nodes=tuple(nodes.values()))

    def check_credentials(self, nodes: Iterable[InventoryNode], node: yaml.Node, what: str) -> None:
        """Password-based auth needs a user and a credential reference (once per cluster, not per node)."""
        reported: set[str] = set()
        for entry in nodes:
            t = entry.transport
            if t.auth in reported:
                continue
            missing = [key for key, value in (("username", t.username), ("credential", t.credential)) if not value]
            if t.auth in SPNEGO_AUTH and t.credential is not None and not t.username:
                self.error(node, f"{what}: auth {t.auth} with a credential needs the username it is the password of")
            elif t.auth in ("basic", "ntlm") and missing:
                self.error(node, f"{what}: auth {t.auth} needs {' and '.join(missing)} "
                           f"(node {entry.name} and maybe others)")
            else:
                continue
            reported.add(t.auth)

    def merge(self, nodes: dict[str, InventoryNode], new: InventoryNode, entry: yaml.Node, what: str) -> None:
        """A node listed as master *and* worker is one host with both roles, if both entries agree."""
        key = new.name.lower()
        old = nodes.get(key)
        if old is None:
            nodes[key] = new
            return
        if new.roles[0] in old.roles:
            self.error(entry, f"{what}: node '{new.name}' is listed twice")
            return
        if (old.host, old.transport) != (new.host, new.transport):
            self.error(
                entry,
                f"{what}: node '{new.name}' is listed as master and worker with different "
                "connection settings",
            )
            return
        nodes[key] = replace(old, roles=(*old.roles, *new.roles))

    def node(self, entry: yaml.Node, role: Role, transport: Transport, what: str) -> InventoryNode | None:
        parsed = self.node_entry(entry, role, transport, what)
        if parsed is not None and parsed.travels_unencrypted and not parsed.transport.allow_unencrypted:
            t = parsed.transport
            how = "Basic" if t.auth == "basic" else f"{t.auth} with message_encryption: never"
            self.error(
                entry,
                f"{what} {role} '{parsed.host}': {how} over plain http sends the password or every message "
                "readable on the network; use https, or ntlm/kerberos/negotiate (encrypted over http), "
                "or write allow_unencrypted: true for this host (the report then says it was not encrypted)",
            )
            return None
        return parsed

    def node_entry(self, entry: yaml.Node, role: Role, transport: Transport, what: str) -> InventoryNode | None:
        """A bare host, or a mapping with ``host`` and optionally ``name``, ``port`` and ``transport``."""
        name = None
        if isinstance(entry, yaml.ScalarNode):
            host = self.text(entry, f"{what} {role} host")
            if host is None:
                return None
        else:
            section = self.mapping(entry, f"{what} {role}", ("host", "name", "port", "transport"))
            if section is None:
                return None
            if "host" not in section:
                self.error(entry, f"{what}: a {role} without 'host'")
                return None
            host = self.text(section["host"], f"{what} {role} host")
            if host is None:
                return None
            name = self.text(section["name"], f"{what} {role} name") if "name" in section else None
            if "transport" in section:
                transport = self.transport(section["transport"], transport, f"{what} {role} '{host}' transport")
            if "port" in section:
                transport = replace(transport, port=self.port(section["port"], f"{what} {role} '{host}' port"))
        return InventoryNode(name=name or _default_name(host), host=host, roles=(role,), transport=transport)

    # -- transport -----------------------------------------------------------------------------------

    def transport(self, node: yaml.Node, base: Transport, what: str) -> Transport:
        section = self.mapping(node, what, TRANSPORT_KEYS)
        if section is None:
            return base
        values: dict[str, Any] = {}
        if "scheme" in section:
            values["scheme"] = self.choice(section["scheme"], what, "scheme", SCHEMES)
        if "port" in section:
            values["port"] = self.port(section["port"], f"{what} port")
        if "auth" in section:
            values["auth"] = self.choice(section["auth"], what, "auth", AUTH_METHODS)
        for key in ("ca_bundle", "client_cert", "client_key"):
            if key in section:
                values[key] = self.file(section[key], f"{what} {key}")
        if "username" in section:
            values["username"] = self.text(section["username"], f"{what} username")
        if "credential" in section:
            values["credential"] = self.credential(section["credential"], what)
        if "timeout" in section:
            values["timeout"] = self.number(section["timeout"], f"{what} timeout", minimum=1.0)
        if "operation_timeout" in section:
            number = self.number(section["operation_timeout"], f"{what} operation_timeout", minimum=1.0)
            values["operation_timeout"] = int(number) if number is not None else None
        for key in ("spn_service", "spn_hostname"):
            if key in section:
                values[key] = self.name_text(section[key], f"{what} {key}")
        for key in ("delegate", "allow_unencrypted"):
            if key in section:
                values[key] = self.flag(section[key], f"{what} {key}")
        if "message_encryption" in section:
            values["message_encryption"] = self.choice(
                section["message_encryption"], what, "message_encryption", MESSAGE_ENCRYPTION
            )
        merged = replace(base, **{k: v for k, v in values.items() if v is not None})
        self.check_transport(merged, node, what)
        return merged

    def choice(self, node: yaml.Node, what: str, key: str, options: tuple[str, ...]) -> str | None:
        """One of ``options``, in lower case (the value is matched case-insensitively)."""
        value = self.text(node, f"{what} {key}")
        if value is None or value.lower() in options:
            return value.lower() if value else None
        if key == "auth" and value.lower() == "credssp":
            self.error(node, f"{what}: auth credssp is not supported (it was never tested against a CredSSP server); "
                       "for a second hop use auth kerberos with delegate: true")
        else:
            allowed = " or ".join(options) if len(options) == 2 else f"one of {', '.join(options)}"
            self.error(node, f"{what}: {key} must be {allowed}, not '{value}'")
        return None

    def flag(self, node: yaml.Node, what: str) -> bool | None:
        value = self.scalar(node, what)
        if not isinstance(value, bool):
            self.error(node, f"{what} must be true or false, not {value!r}")
            return None
        return value

    def name_text(self, node: yaml.Node, what: str) -> str | None:
        """A host or service name for an SPN: no spaces, slashes or '@' (they would change the principal)."""
        value = self.text(node, what)
        if value is not None and any(c.isspace() or c in "/@\\" for c in value):
            self.error(node, f"{what} must be a bare name (no spaces, '/', '@' or '\\'), not {value!r}")
            return None
        return value

    def check_transport(self, transport: Transport, node: yaml.Node, what: str) -> None:
        if transport.auth == "certificate":
            if transport.client_cert is None or transport.client_key is None:
                self.error(node, f"{what}: auth certificate needs client_cert and client_key")
            if transport.scheme != "https":
                self.error(node, f"{what}: auth certificate only works over https")
        if transport.delegate and transport.auth not in SPNEGO_AUTH:
            self.error(node, f"{what}: delegate only applies to auth kerberos or negotiate, not {transport.auth}")
        if transport.operation_timeout >= transport.timeout:
            self.error(
                node,
                f"{what}: operation_timeout ({transport.operation_timeout}) must be below "
                f"timeout ({transport.timeout:g})",
            )

    def port(self, node: yaml.Node, what: str) -> int | None:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.error(node, f"{what} must be a whole number from 1 to 65535, not {value!r}")
            return None
        return value

    def number(self, node: yaml.Node, what: str, *, minimum: float) -> float | None:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            self.error(node, f"{what} must be a number of seconds ≥ {minimum:g}, not {value!r}")
            return None
        return float(value)

    def file(self, node: yaml.Node, what: str) -> Path | None:
        raw = self.text(node, what)
        if raw is None:
            return None
        try:
            path = Path(raw).expanduser()
            path = path if path.is_absolute() else self.base / path
            found = path.is_file()
        except (OSError, RuntimeError) as exc:  # a name too long, ~user unknown
            self.error(node, f"{what}: {raw[:200]!r} cannot be a file here ({exc})")
            return None
        if not found:
            self.error(node, f"{what}: file {path} does not exist")
            return None
        return path

    def credential(self, node: yaml.Node, what: str) -> CredentialRef | None:
        if isinstance(node, yaml.ScalarNode):
            self.error(
                node,
                f"{what}: credential must say where the password is ({{env: VAR}}, "
                "{keyring: SERVICE} or {prompt: true}); a password must not be written here",
            )
            return None
        section = self.mapping(node, f"{what} credential", ("env", "keyring", "prompt"))
        if section is None:
            return None
        if len(section) != 1:
            self.error(node, f"{what}: credential needs exactly one of env, keyring, prompt")
            return None
        kind, value_node = next(iter(section.items()))
        if kind == "prompt":
            if self.scalar(value_node, "prompt") is not True:
                self.error(value_node, f"{what}: write prompt: true to be asked for the password")
                return None
            return CredentialRef(kind="prompt")
        name = self.text(value_node, f"{what} credential {kind}")
        return CredentialRef(kind=cast(Literal["env", "keyring"], kind), name=name) if name else None


def _default_name(host: str) -> str:
    """A node's name when the inventory gives none: the host's first DNS label (an IP stays whole)."""
    if host.replace(".", "").isdigit() or ":" in host:
        return host
    return host.split(".", 1)[0]


@dataclass
class InventoryWriter:
    """Build an inventory document (used by the lab; users write theirs by hand)."""

    transport: dict[str, Any]
    clusters: list[dict[str, Any]] = field(default_factory=list)

    def add_cluster(self, name: str, masters: list[dict[str, Any]], workers: list[dict[str, Any]]) -> None:
        self.clusters.append({"name": name, "masters": masters, "workers": workers})

    def dump(self, header: str = "") -> str:
        document = {"version": 1, "defaults": {"transport": self.transport}, "clusters": self.clusters}
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        return comment + yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
