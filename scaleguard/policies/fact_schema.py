"""The shape of the facts, as data: what `requires` may name, and where a missing fact comes from.

The loader checks every ``requires`` path against this tree (a typo there would otherwise turn a policy
into a permanent ``not_assessed``), the engine quotes ``source`` when a required fact is unknown (so the
message says which evidence file to add), and the facts reference in :mod:`scaleguard.policies.facts`
is rendered from it (a test keeps the two identical). Types use CEL names; ``?`` marks a nullable fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Fact:
    type: str
    doc: str
    source: str | None = None


Tree = dict[str, Union[Fact, "Branch"]]


@dataclass(frozen=True)
class Branch:
    """A map-valued fact whose keys are facts themselves (``nullable``: the whole map may be null)."""

    doc: str
    children: Tree
    nullable: bool = False
    source: str | None = None


def _certificate() -> Tree:
    return {
        "thumbprint": Fact("string", "40 upper-case hex digits"),
        "subject": Fact("string", "distinguished name as the reader renders it"),
        "subject_key": Fact("string", "subject lower-cased with spaces removed, for comparisons"),
        "issuer": Fact("string", "issuer distinguished name"),
        "common_names": Fact("list(string)", "every CN attribute (MakeCert's CN=a;CN=b gives two)"),
        "san_dns": Fact("list(string)", "SAN DNS names"),
        "san_ip": Fact("list(string)", "SAN IP addresses"),
        "names": Fact("list(string)", "CNs + SAN DNS + SAN IP, lower-cased, deduplicated"),
        "serial": Fact("string", "serial number as hex"),
        "not_before": Fact("timestamp", "start of validity"),
        "not_after": Fact("timestamp", "end of validity"),
        "days_left": Fact(
            "int", "days from now to not_after, rounded down (negative once expired)"
        ),
        "expired": Fact("bool", "now is after not_after"),
        "not_yet_valid": Fact("bool", "now is before not_before"),
        "key_algorithm": Fact("string", "RSA, EC, DSA, ED25519, ... (upper-case)"),
        "key_bits": Fact("int?", "key size; null when unknown"),
        "signature_hash": Fact("string?", "sha1, sha256, md5, ... (lower-case); null when unknown"),
        "self_signed": Fact("bool", "issuer equals subject and the certificate's own key signed it"),
        "has_private_key": Fact("bool?", "this copy has a private key; null when unknown", "keys.json"),
        "found_in": Fact("string", "where this copy was found: '<node>\\Root' or '<node>\\My'"),
    }


def _service() -> Branch:
    return Branch(
        "the SSISScaleOut service of that role; null when services are unknown",
        {
            "present": Fact("bool", "a service of that role is installed"),
            "name": Fact("string?", "e.g. SSISScaleOutMaster150"),
            "state": Fact("string?", "as reported, lower-case (running, stopped, ...)"),
            "start_mode": Fact("string?", "as reported, lower-case (auto, manual, disabled, ...)"),
            "running": Fact("bool", "state is running"),
            "automatic": Fact("bool", "start mode is automatic (delayed start included)"),
            "account": Fact("string?", "the account it runs as (StartName)"),
        },
        nullable=True,
        source="services.json",
    )


def _config() -> Branch:
    return Branch(
        "the settings file itself",
        {
            "path": Fact("string", "where it was read from"),
            "format": Fact("string", "xml, json or unknown"),
            "parsed": Fact("bool", "the file could be read as XML or JSON"),
            "parse_error": Fact("string?", "why it could not; null when parsed"),
        },
    )


def _thumbprint_setting(prefix: str, setting: str) -> Tree:
    return {
        f"{prefix}_raw": Fact("string?", f"{setting} exactly as written; null when absent"),
        prefix: Fact(
            "string?", f"{setting} normalised to 40 upper-case hex; null when absent or not a thumbprint"
        ),
        f"{prefix}_exact": Fact("bool", f"{setting} is exactly 40 hex digits as written"),
        f"{prefix}_issue": Fact("string?", f"what is wrong with {setting} as written; null when exact"),
    }


def _master() -> Branch:
    return Branch(
        "the master role of the node being evaluated; null when it has no MasterSettings.config",
        {
            "name": Fact("string", "node name"),
            "config": _config(),
            "port_raw": Fact("string?", "PortNumber as written"),
            "port": Fact("int?", "PortNumber when it is an integer 1-65535; else null"),
            "port_issue": Fact("string?", "what is wrong with PortNumber; null when valid"),
            **_thumbprint_setting("thumbprint", "SSLCertThumbprint"),
            "cert_found": Fact(
                "bool?",
                "the certificate was found; null when the thumbprint is unreadable, or it was not found and "
                "this node's stores are unknown",
                "certs/Root, certs/My",
            ),
            "in_root": Fact(
                "bool?",
                "the certificate is in this node's Root; null when Root or thumbprint unknown",
                "certs/Root",
            ),
            "key_present": Fact(
                "bool?",
                "the Root copy has its private key (false when not in Root); null when unknown",
                "keys.json",
            ),
            "has_binding": Fact(
                "bool?",
                "an HTTP.sys ipport binding serves the port on 0.0.0.0, [::] or a known own address; null "
                "when bindings or port are unknown, or only other addresses are bound and host.json is "
                "missing",
                "sslcert.txt",
            ),
            "binding": Branch(
                "that binding (0.0.0.0 preferred, then [::], then an own address); null when none",
                {
                    "ip_port": Fact("string", "as HTTP.sys names it, e.g. 0.0.0.0:8391"),
                    "host": Fact("string", "address part, brackets removed"),
                    "port": Fact("int?", "port part"),
                    "cert_hash": Fact("string?", "40 upper-case hex digits"),
                    "app_id": Fact("string?", "{guid}"),
                    "store": Fact("string?", "certificate store name as shown; null means MY"),
                    "store_is_root": Fact("bool", "the store is Root (case-insensitive)"),
                },
                nullable=True,
                source="sslcert.txt",
            ),
            "service": _service(),
            "names": Fact(
                "list(string)",
                "the node's own names, lower-case: node name, computer name, FQDN, addresses from host.json",
            ),
            "endpoint_names": Fact("list(string)", "names plus every name the master certificate carries"),
            "identity_complete": Fact(
                "bool", "FQDN, addresses and the certificate are all known, so endpoint_names is complete"
            ),
            "not_self_signed_root": Fact(
                "list(map)?",
                "{thumbprint, subject} of every Root certificate that is not self-signed; null "
                "when Root is unknown",
                "certs/Root",
            ),
        },
        nullable=True,
    )


def _endpoint() -> Branch:
    return Branch(
        "MasterEndpoint taken apart; null when the setting is absent",
        {
            "scheme": Fact("string?", "lower-case scheme"),
            "host": Fact("string?", "lower-case host, IPv6 brackets removed; null when unparsable"),
            "port": Fact("int?", "explicit port; null when absent or invalid"),
            "path": Fact("string", "path part ('' or '/' for a clean endpoint)"),
            "valid": Fact("bool", "an https://host:port URL (a trailing '/' is accepted)"),
            "issue": Fact("string?", "what is wrong with it; null when valid"),
            "normalized": Fact("string?", "scheme://host:port lower-case; null without host or port"),
        },
        nullable=True,
    )


def _worker() -> Branch:
    return Branch(
        "the worker role of the node being evaluated; null when it has no WorkerSettings.config",
        {
            "name": Fact("string", "node name"),
            "config": _config(),
            "endpoint_raw": Fact("string?", "MasterEndpoint as written"),
            "endpoint": _endpoint(),
            **_thumbprint_setting("master_thumbprint", "MasterHttpsCertThumbprint"),
            **_thumbprint_setting("thumbprint", "WorkerHttpsCertThumbprint"),
            "store_location": Fact("string", "StoreLocation as configured (default LocalMachine)"),
            "store_name": Fact("string", "StoreName as configured (default My)"),
            "store_thumbprints": Fact(
                "list(string)?",
                "thumbprints in the configured store; null when that store was not collected "
                "(only LocalMachine\\My and \\Root are)",
                "certs/My",
            ),
            "in_store": Fact("bool?", "the worker certificate is in the configured store", "certs/My"),
            "in_root": Fact("bool?", "the worker certificate is in this node's Root", "certs/Root"),
            "cert_found": Fact(
                "bool?",
                "the certificate was found; null when the thumbprint is unreadable, or it was not found and "
                "the stores are unknown",
                "certs/My",
            ),
            "key_present": Fact(
                "bool?", "the configured-store copy has its private key (false when absent)", "keys.json"
            ),
            "key_readers": Fact(
                "list(string)?",
                "identities that may read that private key, lower-case ([] when there is no "
                "key); null when unknown",
                "keys.json (KeyReaders)",
            ),
            "service": _service(),
            "service_account_aliases": Fact(
                "list(string)?",
                "lower-case names under which an ACL may grant the service account access "
                "(the account, its short form, broad groups that include it); null when unknown",
                "services.json",
            ),
            "in_master_roots": Fact(
                "list(map)",
                "{name, in_root (bool?)} for every master node: whether the worker certificate is in that "
                "master's LocalMachine\\Root (null when that Root is unknown or the thumbprint unreadable)",
                "certs/Root of the masters",
            ),
            "stale": Fact(
                "list(map)?",
                "{thumbprint, subject, not_after} of other certificates in My with the worker "
                "certificate's subject; null when My or the certificate is unknown",
                "certs/My",
            ),
        },
        nullable=True,
    )


def _node() -> Branch:
    return Branch(
        "the node being evaluated (null for cluster-scope policies); its roles are `master` and `worker`",
        {
            "name": Fact("string", "node name (evidence folder / inventory name)"),
            "computer_name": Fact("string", "Windows computer name"),
            "fqdn": Fact("string?", "FQDN", "host.json"),
            "addresses": Fact("list(string)?", "IP addresses", "host.json"),
            "names": Fact("list(string)", "lower-case: name, computer name, FQDN, addresses"),
            "state": Fact(
                "string", "collection state: ok, unreachable, auth_refused, timed_out, no_config, failed"
            ),
            "roles": Fact("list(string)", "master and/or worker"),
            "root_thumbprints": Fact("list(string)?", "thumbprints in LocalMachine\\Root", "certs/Root"),
            "my_thumbprints": Fact("list(string)?", "thumbprints in LocalMachine\\My", "certs/My"),
            "root": Fact(
                "list(map)?",
                "every Root certificate (certificate facts; slower to iterate, built only "
                "when a loaded policy mentions it)",
                "certs/Root",
            ),
            "my": Fact("list(map)?", "every My certificate (as root)", "certs/My"),
            "bindings": Fact("list(map)?", "every HTTP.sys SSL binding (binding facts)", "sslcert.txt"),
            "services": Fact("list(map)?", "every SSISScaleOut* service (service facts)", "services.json"),
            "schannel": Branch(
                "SCHANNEL registry values; null when not collected",
                {
                    "client_auth_trust_mode": Fact("int?", "ClientAuthTrustMode; null when not set"),
                    "send_trusted_issuer_list": Fact("int?", "SendTrustedIssuerList; null when not set"),
                },
                nullable=True,
                source="schannel.json (or live collection)",
            ),
            "ssisdb": Branch(
                "SSISDB facts read on a master; null offline",
                {
                    "sslcert_thumbprint_raw": Fact("string?", "catalog.master_properties SSLCERT_THUMBPRINT"),
                    "sslcert_thumbprint": Fact("string?", "the same, normalised"),
                    "master_address": Fact("string?", "MASTER_ADDRESS"),
                    "master_service_port": Fact("string?", "MASTER_SERVICE_PORT"),
                },
                nullable=True,
                source="SSISDB (live collection only)",
            ),
            "diagnostics": Fact("list(map)", "{level, source, message} of everything odd in the evidence"),
        },
        nullable=True,
    )


def _cluster() -> Branch:
    return Branch(
        "the cluster the node belongs to",
        {
            "name": Fact("string", "cluster name"),
            "mode": Fact("string", "offline or live"),
            "live": Fact("bool", "mode is live"),
            "nodes": Fact(
                "list(map)",
                "{name, state, reason, roles, usable} per node; usable = collected and has a role",
            ),
            "master_count": Fact("int", "number of master nodes"),
            "worker_count": Fact("int", "number of worker nodes"),
            "master_thumbprints": Fact(
                "list(string)", "distinct normalised SSLCertThumbprint of the masters"
            ),
            "master_service_running": Fact(
                "bool?",
                "some master runs its service; null when none is known to and some are unknown",
                "services.json",
            ),
            "master_endpoints": Fact(
                "list(map)",
                "{endpoint, host, port, workers} for every distinct MasterEndpoint the workers name",
            ),
            "ssisdb_thumbprint": Fact(
                "string?",
                "SSLCERT_THUMBPRINT read from SSISDB on any master",
                "SSISDB (live collection only)",
            ),
            "ssisdb_node": Fact("string?", "the master it was read on"),
        },
    )


ROOT: Tree = {
    "now": Fact("timestamp", "the audit time (one value for the whole run)"),
    "thresholds": Branch(
        "configurable limits",
        {
            "expiry_high_days": Fact("int", "days left at or below which expiry is high (30)"),
            "expiry_medium_days": Fact("int", "days left at or below which expiry is medium (60)"),
            "min_rsa_bits": Fact("int", "smallest acceptable RSA key (2048)"),
        },
    ),
    "cluster": _cluster(),
    "masters": Fact(
        "list(map)",
        "every master node of the cluster, lean (CEL copies each element it iterates): {name, thumbprint, "
        "port, endpoint_names, identity_complete, service_running (bool?)} with the meanings of the same "
        "keys under master",
    ),
    "node": _node(),
    "master": _master(),
    "worker": _worker(),
    "master_cert": Branch(
        "the certificate named by SSLCertThumbprint (its own variable: CEL copies nested maps on every "
        "access): from this node's Root, else its My, else any node's stores (a copy with the same "
        "thumbprint is the same certificate); null when not found or not a master",
        _certificate(),
        nullable=True,
        source="certs/Root",
    ),
    "worker_cert": Branch(
        "the worker certificate: from the configured store, else this node's My/Root, else any node; "
        "null when not found or not a worker",
        _certificate(),
        nullable=True,
        source="certs/My",
    ),
    "item": Fact("dyn", "the current element of `for_each` (cluster scope); null otherwise"),
}


def lookup(path: str) -> Fact | Branch | None:
    """The schema entry a dotted fact path names, or None when the path is not a fact."""
    parts = path.split(".")
    current: Fact | Branch | None = None
    tree: Tree | None = ROOT
    for part in parts:
        if tree is None or part not in tree:
            return None
        current = tree[part]
        tree = current.children if isinstance(current, Branch) else None
    return current


def source_of(path: str) -> str | None:
    """The evidence a fact comes from: the nearest ``source`` along the path, innermost first."""
    parts = path.split(".")
    found: str | None = None
    tree: Tree | None = ROOT
    for part in parts:
        if tree is None or part not in tree:
            break
        entry = tree[part]
        found = entry.source or found
        tree = entry.children if isinstance(entry, Branch) else None
    return found


def render(tree: Tree = ROOT, prefix: str = "") -> list[str]:
    """The reference as text lines (``path  type  doc``), in schema order."""
    lines: list[str] = []
    for key, entry in tree.items():
        path = f"{prefix}{key}"
        if isinstance(entry, Branch):
            kind = "map?" if entry.nullable else "map"
            lines.append(f"{path} ({kind}): {entry.doc}")
            lines.extend(render(entry.children, path + "."))
        else:
            lines.append(f"{path} ({entry.type}): {entry.doc}")
    return lines
