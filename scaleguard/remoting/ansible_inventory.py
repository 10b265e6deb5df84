"""Ansible inventories (INI or YAML) as scaleguard inventories, so a shop keeps one host list.

The convention: a cluster ``X`` is two groups, ``X_masters`` and ``X_workers`` (usually children of a
group ``X``). Hosts in those groups, directly or through child groups, are the cluster's master and worker
nodes; a host in both is one node with both roles. ``scaleguard_cluster`` (a group variable) gives the
cluster's display name when the group name cannot (``CONTOSO-SSIS``). Variables follow Ansible's order:
``all``, then groups from parent to child (same depth: by name), then the host's own.

Connection variables honoured: ``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_winrm_transport`` (the first of a list), ``ansible_winrm_scheme`` (default https, http when the
port is 5985, as Ansible does), ``ansible_winrm_server_cert_validation`` (``validate``; ``ignore`` is
refused: pass ``--insecure`` to the audit instead, which the report shows), ``ansible_winrm_ca_trust_path``,
``ansible_winrm_cert_pem`` / ``ansible_winrm_cert_key_pem``, ``ansible_winrm_kerberos_delegation``,
``ansible_winrm_kerberos_hostname_override``, ``ansible_winrm_service``, ``ansible_winrm_message_encryption``,
``ansible_winrm_operation_timeout_sec`` and ``ansible_winrm_read_timeout_sec``. Other ``ansible_*`` and
unrelated variables are left alone (inventories serve many playbooks).

Passwords stay references: ``ansible_password`` (or ``ansible_winrm_password``) is accepted only as
``{{ lookup('env', 'VAR') }}``; ``scaleguard_credential_env``, ``scaleguard_credential_keyring`` or
``scaleguard_credential_prompt: true`` name one too. A literal password, or a vault variable scaleguard
cannot resolve, is refused with the way to fix it.

The result is the native inventory document (:mod:`scaleguard.remoting.inventory`), which the native
reader then checks like any other, so both formats share every rule (encryption over http, certificate
auth, timeouts). The files are read with PyYAML's safe loader and a small INI reader; no Jinja is
evaluated and no plugin runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scaleguard.remoting.errors import InventoryError

ROLE_GROUP = re.compile(r"^(?P<cluster>.+)_(?P<role>masters|workers)$", re.IGNORECASE)
ENV_LOOKUP = re.compile(
    r"""^\{\{\s*lookup\(\s*['"](?:ansible\.builtin\.)?env['"]\s*,\s*['"](?P<var>[A-Za-z_][A-Za-z0-9_]{0,127})['"]\s*\)\s*\}\}$"""
)
HOST_RANGE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")
MAX_HOSTS = 10_000
"""A hostile range pattern (``h[0:999999999]``) must not expand without bound."""
PASSWORD_VARS = ("ansible_password", "ansible_winrm_password", "ansible_winrm_pass")
CREDENTIAL_VARS = ("scaleguard_credential_env", "scaleguard_credential_keyring", "scaleguard_credential_prompt")
SCALEGUARD_VARS = ("scaleguard_cluster", "scaleguard_allow_unencrypted", *CREDENTIAL_VARS)
TEXT_VARS = {
    "ansible_user": "username",
    "ansible_winrm_user": "username",
    "ansible_winrm_ca_trust_path": "ca_bundle",
    "ansible_winrm_cert_pem": "client_cert",
    "ansible_winrm_cert_key_pem": "client_key",
    "ansible_winrm_kerberos_hostname_override": "spn_hostname",
    "ansible_winrm_service": "spn_service",
}
FLAG_VARS = {"ansible_winrm_kerberos_delegation": "delegate", "scaleguard_allow_unencrypted": "allow_unencrypted"}
NUMBER_VARS = {"ansible_winrm_operation_timeout_sec": "operation_timeout", "ansible_winrm_read_timeout_sec": "timeout"}
TRANSPORTS = {"plaintext": "basic", "ssl": "basic"}
"""pywinrm's transport names that are Basic under another name (over http / https)."""


MAX_NESTING = 64
"""Groups nested deeper than this are refused (the walk up and down the tree stays bounded)."""


@dataclass
class Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_lines: dict[str, int] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    line: int | None = None


@dataclass
class AnsibleInventory:
    path: Path
    groups: dict[str, Group] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def group(self, name: str, line: int | None = None) -> Group:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = Group(name, line=line)
        return found

    def error(self, line: int | None, message: str) -> None:
        self.errors.append(f"{self.path}{f':{line}' if line else ''}: {message}")


def looks_like_ansible(text: str) -> bool:
    """Whether ``text`` is an Ansible inventory rather than a native one (which has ``clusters:``)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = None
    if isinstance(document, dict):
        if "clusters" in document or "defaults" in document:
            return False
        return any(isinstance(v, dict) and {"hosts", "children", "vars"} & v.keys() for v in document.values())
    return any(_section(line) is not None for line in text.splitlines())


def native_document(path: Path, text: str) -> dict[str, Any]:
    """The native inventory document an Ansible inventory stands for (``scaleguard inventory import``)."""
    return to_native(parse(path, text))


# ------------------------------------------------------------------------------------------------ reading


def parse(path: Path, text: str) -> AnsibleInventory:
    """The groups of an INI or YAML Ansible inventory (YAML when it parses as a mapping of groups)."""
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        document = None
    if isinstance(document, yaml.MappingNode):
        return _YamlReader(path).read(document)
    return _read_ini(path, text)


def _section(line: str) -> tuple[str, str] | None:
    stripped = line.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")) or len(stripped) < 3:
        return None
    name, _, kind = stripped[1:-1].partition(":")
    if not name or any(c.isspace() for c in name):
        return None
    return name, kind or "hosts"


def _read_ini(path: Path, text: str) -> AnsibleInventory:
    inv = AnsibleInventory(path)
    current, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        section = _section(line)
        if section is not None:
            current, kind = section
            if kind not in ("hosts", "vars", "children"):
                inv.error(number, f"[{current}:{kind}]: unknown section kind (hosts, vars or children)")
            inv.group(current, number)
            continue
        group = inv.group(current, number)
        if kind == "children":
            group.children.append(line.split()[0])
        elif kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                inv.error(number, f"[{current}:vars]: expected key=value")
                continue
            group.vars[key.strip()] = _ini_value(value.strip(), literal=False)
        elif kind == "hosts":
            _ini_host(inv, group, line, number)
    return inv


def _ini_host(inv: AnsibleInventory, group: Group, line: str, number: int) -> None:
    try:
        words = shlex.split(line, comments=True, posix=True)
    except ValueError as exc:
        inv.error(number, f"[{group.name}]: cannot read the host line ({exc})")
        return
    if not words:
        return
    values: dict[str, Any] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            inv.error(number, f"[{group.name}] {words[0]}: expected key=value, not {word!r}")
            continue
        values[key] = _ini_value(value, literal=True)
    for host in _expand(inv, words[0], number):
        group.hosts.setdefault(host, {}).update(values)
        group.host_lines.setdefault(host, number)


def _ini_value(value: str, *, literal: bool) -> Any:
    """A host line's value is read as a number or boolean when it is one (Ansible reads a Python literal
    there); a ``:vars`` value stays text, as in Ansible. Nothing else is evaluated."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if literal and re.fullmatch(r"-?[0-9]{1,9}", value):
        return int(value)
    if literal and value in ("True", "False"):
        return value == "True"
    return value


def _expand(inv: AnsibleInventory, pattern: str, line: int | None) -> list[str]:
    """``web[01:03].example`` → web01, web02, web03 (Ansible's host ranges, numeric or alphabetic)."""
    match = HOST_RANGE.search(pattern)
    if match is None:
        return [pattern]
    first, last, step_text = match.groups()
    step = int(step_text or 1)
    if first.isdigit() != last.isdigit() or step < 1:
        inv.error(line, f"host range {pattern!r}: both ends must be numbers or letters, step ≥ 1")
        return []
    if first.isdigit():
        low, high = int(first), int(last)
        width = len(first) if first.startswith("0") else 0
        if high < low or (high - low) // step + 1 > MAX_HOSTS:
            inv.error(line, f"host range {pattern!r}: empty or more than {MAX_HOSTS} hosts")
            return []
        items = [str(i).zfill(width) for i in range(low, high + 1, step)]
    else:
        items = [chr(c) for c in range(ord(first), ord(last) + 1, step)]
    head, tail = pattern[: match.start()], pattern[match.end():]
    hosts: list[str] = []
    for item in items:
        hosts += _expand(inv, head + item + tail, line)
        if len(hosts) > MAX_HOSTS:
            inv.error(line, f"host range {pattern!r}: more than {MAX_HOSTS} hosts")
            return []
    return hosts


class _YamlReader:
    """Ansible's YAML inventory: top-level groups, each with ``hosts``, ``vars`` and ``children``."""

    def __init__(self, path: Path) -> None:
        self.inv = AnsibleInventory(path)

    def read(self, document: yaml.MappingNode) -> AnsibleInventory:
        for key, value in document.value:
            self.group(key, value)
        return self.inv

    def group(self, key: yaml.Node, node: yaml.Node) -> None:
        name = self.value(key)
        line = key.start_mark.line + 1
        if not isinstance(name, str) or not name:
            self.inv.error(line, "a group name must be text")
            return
        group = self.inv.group(name, line)
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return
        if not isinstance(node, yaml.MappingNode):
            self.inv.error(line, f"group {name!r} must be a mapping of hosts, vars and children")
            return
        for sub_key, sub in node.value:
            what = self.value(sub_key)
            if what == "vars":
                group.vars.update(self.mapping(sub, f"group {name!r} vars"))
            elif what == "hosts":
                for host_key, host_vars in self.pairs(sub, f"group {name!r} hosts"):
                    host_line = host_key.start_mark.line + 1
                    pattern = str(self.value(host_key))
                    values = self.mapping(host_vars, f"host {pattern!r}")
                    for host in _expand(self.inv, pattern, host_line):
                        group.hosts.setdefault(host, {}).update(values)
                        group.host_lines.setdefault(host, host_line)
            elif what == "children":
                for child_key, child in self.pairs(sub, f"group {name!r} children"):
                    child_name = self.value(child_key)
                    if isinstance(child_name, str):
                        group.children.append(child_name)
                    self.group(child_key, child)
            else:
                self.inv.error(sub_key.start_mark.line + 1, f"group {name!r}: unknown key {what!r} "
                               "(hosts, vars or children)")

    def pairs(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        """A mapping's key and value nodes: none for an empty value, an error for anything else."""
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return []
        if not isinstance(node, yaml.MappingNode):
            self.inv.error(node.start_mark.line + 1, f"{what} must be a mapping")
            return []
        return list(node.value)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, Any]:
        return {str(self.value(k)): self.value(v) for k, v in self.pairs(node, what)}

    @staticmethod
    def value(node: yaml.Node) -> Any:
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        finally:
            loader.dispose()


# --------------------------------------------------------------------------------------------- resolving


def to_native(inv: AnsibleInventory) -> dict[str, Any]:
    """The native inventory document for the clusters the role groups name; raises with every problem."""
    parents: dict[str, set[str]] = {}
    for group in inv.groups.values():
        for child in group.children:
            parents.setdefault(child, set()).add(group.name)
            if child not in inv.groups:
                inv.error(group.line, f"group {group.name!r} names child {child!r}, which is not defined")
    depth: dict[str, int] = {}
    for name in inv.groups:
        if _depth(name, parents, depth, ()) > MAX_NESTING:
            inv.error(inv.groups[name].line, f"group {name!r}: groups nested deeper than {MAX_NESTING} (or a cycle)")
            raise InventoryError("\n".join(inv.errors))
    clusters: dict[str, dict[str, Any]] = {}
    for group in sorted(inv.groups.values(), key=lambda g: g.name):
        match = ROLE_GROUP.match(group.name)
        if match is None:
            continue
        role = match["role"].lower()
        key = match["cluster"]
        group_vars = _merged(_ancestors(group.name, parents, inv), depth)
        name = str(group_vars.get("scaleguard_cluster") or key)
        cluster = clusters.setdefault(key.lower(), {"name": name, "masters": [], "workers": []})
        for host, line in sorted(_members(group.name, inv, set()).items()):
            entry = _node(inv, host, line, parents, depth)
            if entry is not None:
                cluster[role].append(entry)
    if not clusters and not inv.errors:
        inv.error(None, "no group named <cluster>_masters or <cluster>_workers: scaleguard reads a cluster "
                  "from those two groups (see the README's Ansible inventories)")
    if inv.errors:
        raise InventoryError("\n".join(inv.errors))
    return {"version": 1, "clusters": list(clusters.values())}


def _depth(name: str, parents: dict[str, set[str]], memo: dict[str, int], path: tuple[str, ...]) -> int:
    """Longest chain of parents up to ``all`` (memoised: diamonds are walked once); a cycle or a chain
    longer than :data:`MAX_NESTING` gives more than it, which the caller refuses."""
    if name == "all":
        return 0
    if name in memo:
        return memo[name]
    if name in path or len(path) > MAX_NESTING:
        return MAX_NESTING + 1
    value = 1 + max((_depth(p, parents, memo, (*path, name)) for p in sorted(parents.get(name, ()))), default=0)
    memo[name] = value
    return value


def _ancestors(name: str, parents: dict[str, set[str]], inv: AnsibleInventory) -> list[Group]:
    """The group, every group above it and ``all``: those defined (a child may name an undefined parent)."""
    found: dict[str, Group | None] = {"all": inv.groups.get("all")}
    todo = [name]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found[current] = inv.groups.get(current)
        todo += sorted(parents.get(current, ()))
    return [group for group in found.values() if group is not None]


def _merged(groups: list[Group], depth: dict[str, int]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for group in sorted(groups, key=lambda g: (depth.get(g.name, 0), g.name)):
        merged.update(group.vars)
    return merged


def _members(name: str, inv: AnsibleInventory, seen: set[str]) -> dict[str, int | None]:
    """Hosts of a group and of its children, with the line each was first named on."""
    group = inv.groups.get(name)
    if group is None or name in seen:
        return {}
    members: dict[str, int | None] = {h: group.host_lines.get(h) for h in group.hosts}
    for child in group.children:
        for host, line in _members(child, inv, seen | {name}).items():
            members.setdefault(host, line)
    return members


def _node(
    inv: AnsibleInventory, host: str, line: int | None, parents: dict[str, set[str]], depth: dict[str, int]
) -> dict[str, Any] | None:
    holding = [g for g in inv.groups.values() if host in g.hosts]
    ancestors = {a.name: a for group in holding for a in _ancestors(group.name, parents, inv)}
    values = _merged(list(ancestors.values()), depth)
    for group in sorted(holding, key=lambda g: (depth.get(g.name, 0), g.name)):
        values.update(group.hosts[host])
    before = len(inv.errors)
    what = f"host {host!r}"
    transport: dict[str, Any] = {}
    for key in values:
        if key.startswith("scaleguard_") and key not in SCALEGUARD_VARS:
            inv.error(line, f"{what}: unknown variable {key!r} (known: {', '.join(SCALEGUARD_VARS)})")
    port = values.get("ansible_port")
    if port is not None:
        port = _port(inv, line, what, port)
        if port is not None:
            transport["port"] = port
    scheme = values.get("ansible_winrm_scheme")
    transport["scheme"] = str(scheme).lower() if scheme is not None else ("http" if port == 5985 else "https")
    auth = values.get("ansible_winrm_transport")
    if auth is not None:
        first = (auth if isinstance(auth, list) else str(auth).split(","))[0] if auth else ""
        transport["auth"] = TRANSPORTS.get(str(first).strip().lower(), str(first).strip().lower())
    for var, key in TEXT_VARS.items():
        if values.get(var) is not None:
            transport[key] = str(values[var])
    for var, key in FLAG_VARS.items():
        if values.get(var) is not None:
            transport[key] = _flag(inv, line, f"{what} {var}", values[var])
    for var, key in NUMBER_VARS.items():
        if values.get(var) is not None:
            transport[key] = _number(inv, line, f"{what} {var}", values[var])
    encryption = values.get("ansible_winrm_message_encryption")
    if encryption is not None:
        transport["message_encryption"] = {"always": "auto"}.get(str(encryption).lower(), str(encryption).lower())
    validation = str(values.get("ansible_winrm_server_cert_validation", "validate")).lower()
    if validation != "validate":
        inv.error(line, f"{what}: ansible_winrm_server_cert_validation={validation}: scaleguard validates the "
                  "nodes' TLS certificates; name the CA with ansible_winrm_ca_trust_path, or run the audit with "
                  "--insecure (the report then says so)")
    credential = _credential(inv, line, what, values)
    if credential is not None:
        transport["credential"] = credential
    if len(inv.errors) > before:
        return None
    entry: dict[str, Any] = {}
    if values.get("ansible_host") is not None or not _is_address(host):
        entry["name"] = host if _is_address(host) else host.split(".", 1)[0]
    entry["host"] = str(values.get("ansible_host") or host)
    entry["transport"] = transport
    return entry


def _credential(inv: AnsibleInventory, line: int | None, what: str, values: dict[str, Any]) -> dict[str, Any] | None:
    references: list[dict[str, Any]] = []
    for var in PASSWORD_VARS:
        if values.get(var) is None:
            continue
        match = ENV_LOOKUP.match(str(values[var]).strip())
        if match is None:
            inv.error(line, f"{what}: {var} must not hold a password; write "
                      f"{var}=\"{{{{ lookup('env', 'VAR') }}}}\" or scaleguard_credential_env=VAR "
                      "(or scaleguard_credential_keyring=SERVICE) and keep the password out of the file")
            return None
        references.append({"env": match["var"]})
    if values.get("scaleguard_credential_env") is not None:
        references.append({"env": str(values["scaleguard_credential_env"])})
    if values.get("scaleguard_credential_keyring") is not None:
        references.append({"keyring": str(values["scaleguard_credential_keyring"])})
    if values.get("scaleguard_credential_prompt") is not None and _flag(
        inv, line, f"{what} scaleguard_credential_prompt", values["scaleguard_credential_prompt"]
    ):
        references.append({"prompt": True})
    distinct = {tuple(sorted(r.items())) for r in references}
    if len(distinct) > 1:
        inv.error(line, f"{what}: the password is referenced more than one way; keep one")
        return None
    return references[0] if references else None


def _port(inv: AnsibleInventory, line: int | None, what: str, value: Any) -> int | None:
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        inv.error(line, f"{what}: ansible_port must be 1-65535, not {value!r}")
        return None
    return int(text)


def _flag(inv: AnsibleInventory, line: int | None, what: str, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    inv.error(line, f"{what} must be true or false, not {value!r}")
    return None


def _number(inv: AnsibleInventory, line: int | None, what: str, value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        inv.error(line, f"{what} must be a number of seconds, not {value!r}")
        return None


def _is_address(host: str) -> bool:
    return host.replace(".", "").isdigit() or ":" in host
