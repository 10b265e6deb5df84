"""Read an offline evidence folder (docs/architecture.md, "Evidence folder") into a ClusterSnapshot.

The folder is assembled by hand on Windows, so anything can be in it. The reader's promises:

* every node is read on its own, and every artefact of a node on its own: one bad file costs that
  artefact (a diagnostic, the fact becomes unknown), never the node, never the cluster;
* ``None`` means unknown and ``[]`` means "collected, nothing there" — a missing ``sslcert.txt`` is
  unknown bindings, a header-only one is no bindings;
* a settings file that exists but cannot be read is still a :class:`ConfigFile` (with ``parse_error``),
  so the node keeps its role and SO-M01/SO-W01 report the broken file instead of the node vanishing;
* nothing is read whole beyond a sane size (4 MiB for text artefacts, 1 MiB for a certificate), and
  nothing that is not a regular file is opened for reading (a FIFO would hang the audit);
* reading stays inside the folder: a symbolic link (a node folder, ``certs``, a store folder or a file)
  is never followed (``lstat``, ``O_NOFOLLOW``); it becomes a diagnostic on its node that names the link,
  never the target, and no diagnostic ever quotes a file's bytes (it says what the file is not, its
  size and its name), so nothing from outside the folder can reach a report;
* names are data: a name that is not valid UTF-8 is kept with ``\\xNN`` escapes (:func:`os_name`);
* each node has a budget (:class:`NodeBudget`: bytes read and seconds spent, from
  ``SCALEGUARD_NODE_BUDGET_MIB`` and ``SCALEGUARD_NODE_BUDGET_SECONDS``): a node that exceeds it
  becomes that node's error and the rest of the fleet is still read;
* file and folder names are matched case-insensitively, as they are on the Windows box they came from.

Entries at the cluster level that are not folders (a README, the zip the folder came in) are not nodes:
they are skipped and logged at INFO level, because a cluster snapshot has no place for diagnostics and
such files are normal. Folders starting with ``.`` and ``__MACOSX`` (archive debris) are skipped too.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Literal, TypeVar

from scaleguard.collectors.parsers.certs import CertificateParseError, load_certificates_with_notes
from scaleguard.collectors.parsers.config import ConfigKind, parse_config_with_notes
from scaleguard.collectors.parsers.host import host_from_json, schannel_from_json
from scaleguard.collectors.parsers.keys import apply_key_facts, key_facts_from_json
from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert_with_notes
from scaleguard.collectors.parsers.psjson import PowerShellJsonError, loads_powershell_json
from scaleguard.collectors.parsers.services import services_from_json
from scaleguard.safefile import OPEN_FLAGS
from scaleguard.safetext import os_name
from scaleguard.snapshot.model import (
    Certificate,
    CertificateStore,
    ClusterSnapshot,
    Collection,
    CollectionState,
    ConfigFile,
    Diagnostic,
    DiagnosticLevel,
    HostIdentity,
    NodeSnapshot,
    Service,
    SslBinding,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MIB = 1024 * 1024
TEXT_LIMIT = 4 * MIB
CERT_LIMIT = 1 * MIB
CERT_SUFFIXES = frozenset({".cer", ".crt", ".pem", ".der", ".p7b", ".p7c", ""})
SKIPPED_FOLDERS = frozenset({"__macosx"})
MASTER_FILE = "MasterSettings.config"
WORKER_FILE = "WorkerSettings.config"
BUDGET_MIB_ENV = "SCALEGUARD_NODE_BUDGET_MIB"
BUDGET_SECONDS_ENV = "SCALEGUARD_NODE_BUDGET_SECONDS"
_LISTING_CHECK_EVERY = 256


@dataclass(frozen=True)
class NodeBudget:
    """How much one node's evidence may cost to read before the node becomes an error.

    The defaults are far above a real node (a few dozen files, well under 1 MiB, read in milliseconds)
    and far below what could stall a fleet audit: every file is capped on its own, but a node folder
    can hold any number of them.
    """

    max_bytes: int = 64 * MIB
    max_seconds: float = 60.0

    @classmethod
    def from_environment(cls) -> NodeBudget:
        """The defaults, overridden by ``SCALEGUARD_NODE_BUDGET_MIB`` / ``SCALEGUARD_NODE_BUDGET_SECONDS``."""
        default = cls()
        return cls(
            max_bytes=round(_positive_env(BUDGET_MIB_ENV, default.max_bytes / MIB) * MIB),
            max_seconds=_positive_env(BUDGET_SECONDS_ENV, default.max_seconds),
        )


class BudgetExceeded(Exception):
    """The node's evidence costs more than its :class:`NodeBudget`; the message says which bound."""


class _Unreadable(Exception):
    """A file that exists but cannot be used; the message completes "<file> ..."."""


def read_evidence(path: Path) -> ClusterSnapshot:
    """The cluster in ``path``: one node per sub-folder, named by the folder (the computer name).

    Raises :class:`NotADirectoryError` only when ``path`` itself is not a folder (a usage error);
    everything found inside becomes data or diagnostics. Each node is read within
    :meth:`NodeBudget.from_environment`.
    """
    budget = NodeBudget.from_environment()
    nodes = [read_node(folder, budget) for folder in node_folders(path)]
    return ClusterSnapshot(
        cluster=os_name(path.name or path.resolve().name),
        collected_at=datetime.now(UTC),
        source=os_name(str(path)),
        mode="offline",
        nodes=nodes,
    )


NODE_MARKERS = frozenset(
    {"mastersettings.config", "workersettings.config", "sslcert.txt", "certs", "host.json", "services.json",
     "keys.json", "schannel.json", "ssisdb.json"}
)
"""What only a node folder holds (names compared case-insensitively, as on Windows)."""


def cluster_folders(evidence: Path) -> list[Path] | None:
    """The cluster folders when ``evidence`` holds several clusters (sub-folders that hold node folders),
    else None: ``evidence`` is one cluster. A link among the sub-folders of such a folder is refused
    (``ValueError``), never followed: it may lead anywhere, and skipping it would drop a cluster unseen."""
    children = _subfolders(evidence)
    if not children or any(is_node_folder(c) for c in children):
        return None
    clusters = [c for c in children if any(is_node_folder(n) for n in _subfolders(c))]
    if not clusters:
        return None
    with os.scandir(evidence) as entries:
        links = sorted(os_name(e.name) for e in entries if _is_link(e) and not e.name.startswith("."))
    if links:
        raise ValueError(f"{os_name(str(evidence))}: {', '.join(links)}: a symbolic link among the cluster folders; "
                         "links are not followed (copy the cluster folder in, or audit it on its own)")
    return clusters


def _subfolders(path: Path) -> list[Path]:
    """Real sub-folders (not links), hidden and skipped ones left out, in name order."""
    try:
        with os.scandir(path) as entries:
            found = [Path(e.path) for e in entries
                     if _is_dir(e) and not e.name.startswith(".") and e.name.casefold() not in SKIPPED_FOLDERS]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.name.casefold())


def is_node_folder(path: Path) -> bool:
    """Whether ``path`` is a real folder (not a link) holding what only a node folder holds."""
    try:
        if path.is_symlink():
            return False
        with os.scandir(path) as entries:
            return any(e.name.lower() in NODE_MARKERS for e in entries)
    except OSError:
        return False


def node_folders(path: Path) -> list[Path]:
    """The node folders of the cluster folder ``path``, in name order (what :func:`read_evidence` reads)."""
    if not path.is_dir():
        raise NotADirectoryError(f"evidence folder {path} does not exist or is not a folder")
    folders: list[Path] = []
    with os.scandir(path) as entries:
        listing = sorted(entries, key=lambda e: e.name.casefold())
    for entry in listing:
        if entry.name.startswith(".") or entry.name.casefold() in SKIPPED_FOLDERS:
            continue
        if not _is_dir(entry) and not _is_link(entry):
            log.info("evidence %s: %r is not a node folder; ignored", path, os_name(entry.name))
            continue
        folders.append(Path(entry.path))  # a link stays in: read_node turns it into the node's error
    return folders


def read_node(node_dir: Path, budget: NodeBudget | None = None) -> NodeSnapshot:
    """One node folder; never raises (an unforeseen failure becomes a FAILED node with a diagnostic)."""
    return read_node_with_settings_bytes(node_dir, budget)[0]


def read_node_with_settings_bytes(
    node_dir: Path, budget: NodeBudget | None = None
) -> tuple[NodeSnapshot, dict[ConfigKind, bytes]]:
    """:func:`read_node`, plus the bytes of each settings file it could read, by role.

    The lab serves a node from what this reader read (so a live audit of a folder equals its offline
    audit); a settings file is the one artefact the agent sends as raw bytes, so the lab needs those.
    """
    started = time.perf_counter()
    name = os_name(node_dir.name)
    reader: _NodeReader | None = None
    try:
        if node_dir.is_symlink():
            node = _failed_node(name, f"the node folder {name!r} is a symbolic link; links are not followed, so "
                                "nothing outside the evidence folder is read")
        else:
            reader = _NodeReader(node_dir, budget or NodeBudget.from_environment())
            node = reader.read()
    except BudgetExceeded as exc:
        node = _failed_node(name, f"the node's evidence was not read to the end: {exc}")
    except Exception as exc:  # noqa: BLE001 - the promise is "never a crash"; the reason is kept
        node = _failed_node(name, f"the node folder could not be read: {type(exc).__name__}: {exc}")
    node.collection.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return node, dict(reader.settings_bytes) if reader is not None else {}


def _failed_node(name: str, reason: str) -> NodeSnapshot:
    return NodeSnapshot(
        name=name,
        identity=HostIdentity(computer_name=name),
        collection=Collection(state=CollectionState.FAILED, reason=reason),
        diagnostics=[Diagnostic(level=DiagnosticLevel.ERROR, source=".", message=reason)],
    )


class _NodeReader:
    """Reads one node folder artefact by artefact, collecting diagnostics instead of raising."""

    def __init__(self, node_dir: Path, budget: NodeBudget) -> None:
        self.name = os_name(node_dir.name)
        self.budget = budget
        self.deadline = time.monotonic() + budget.max_seconds
        self.bytes_read = 0
        self.diagnostics: list[Diagnostic] = []
        self.settings_bytes: dict[ConfigKind, bytes] = {}
        self.files = self._listing(node_dir, "")

    def read(self) -> NodeSnapshot:
        master = self._config(MASTER_FILE, "master")
        worker = self._config(WORKER_FILE, "worker")
        no_stores: tuple[CertificateStore | None, CertificateStore | None] = (None, None)
        root, my = self._guarded("certs", no_stores, self._stores)
        bindings = self._guarded("sslcert.txt", None, self._bindings)
        services = self._guarded("services.json", None, self._services)
        self._guarded("keys.json", None, lambda: self._keys(root, my))
        identity = self._guarded("host.json", HostIdentity(computer_name=self.name), self._identity)
        schannel = self._guarded("schannel.json", None, lambda: self._parsed("schannel.json", schannel_from_json))
        return NodeSnapshot(
            name=self.name,
            identity=identity,
            collection=self._collection(master, worker),
            master_config=master,
            worker_config=worker,
            root=root,
            my=my,
            bindings=bindings,
            services=services,
            schannel=schannel,
            sql_versions=None,
            diagnostics=self.diagnostics,
        )

    # -- plumbing ------------------------------------------------------------------------------------

    def _note(self, level: DiagnosticLevel, source: str, *messages: str) -> None:
        self.diagnostics.extend(Diagnostic(level=level, source=source, message=m) for m in messages)

    def _guarded(self, source: str, default: _T, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - one artefact's failure must not cost the node
            self._note(DiagnosticLevel.ERROR, source,
                       f"could not be read ({type(exc).__name__}: {exc}); treated as unknown")
            return default

    def _check_budget(self) -> None:
        if self.bytes_read > self.budget.max_bytes:
            raise BudgetExceeded(f"more than {_size(self.budget.max_bytes)} of files "
                                 f"(limit set by ${BUDGET_MIB_ENV})")
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"reading took longer than {self.budget.max_seconds:g} s "
                                 f"(limit set by ${BUDGET_SECONDS_ENV})")

    def _listing(self, folder: str | Path, prefix: str) -> dict[str, os.DirEntry[str]]:
        """Entries by lower-cased name; a second entry differing only in case is reported, not used.

        The folder itself was checked not to be a link by whoever named it (the caller or
        :func:`_is_dir`); entries that are links are kept and refused where they would be read, so
        that the diagnostic names the artefact the link stands for."""
        found: dict[str, os.DirEntry[str]] = {}
        with os.scandir(folder) as entries:
            listed: list[os.DirEntry[str]] = []
            for entry in entries:
                listed.append(entry)
                if len(listed) % _LISTING_CHECK_EVERY == 0:
                    self._check_budget()
            for entry in sorted(listed, key=attrgetter("name")):
                key = entry.name.lower()
                if key in found:
                    self._note(DiagnosticLevel.LOW, prefix + os_name(entry.name),
                               f"ignored: same name as {os_name(found[key].name)!r} apart from letter case")
                    continue
                found[key] = entry
        return found

    def _read(self, entry: os.DirEntry[str], limit: int, what: str) -> bytes:
        if _is_link(entry):
            raise _Unreadable("is a symbolic link; links are not followed")
        try:
            fd = os.open(entry.path, OPEN_FLAGS)
        except OSError as exc:
            raise _Unreadable(f"cannot be opened ({exc.strerror or exc})") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Unreadable(f"is not a regular file (it is {_file_type(info.st_mode)})")
            if info.st_size > limit:
                raise _Unreadable(f"is too large to be {what} ({_size(info.st_size)}; limit {_size(limit)})")
            self.bytes_read += info.st_size
            self._check_budget()
            data = os.read(fd, info.st_size + 1)
            if len(data) == info.st_size:
                return data
            chunks = [data]
            total = len(data)
            while data and total <= limit:
                data = os.read(fd, limit + 1 - total)
                chunks.append(data)
                total += len(data)
                self.bytes_read += len(data)
            if total > limit:
                raise _Unreadable(f"is too large to be {what} (grew past {_size(limit)} while read)")
            return b"".join(chunks)
        except OSError as exc:
            raise _Unreadable(f"cannot be read ({exc.strerror or exc})") from exc
        finally:
            os.close(fd)

    # -- artefacts -----------------------------------------------------------------------------------

    def _config(self, name: str, kind: ConfigKind) -> ConfigFile | None:
        entry = self.files.get(name.lower())
        if entry is None:
            return None
        file_name = os_name(entry.name)
        try:
            data = self._read(entry, TEXT_LIMIT, "a settings file")
            self.settings_bytes[kind] = data
            config, notes = parse_config_with_notes(data, file_name, kind=kind)
        except _Unreadable as exc:
            config, notes = ConfigFile(path=file_name, parse_error=f"the file {exc}"), []
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - keep the role: a broken file is still a settings file
            reason = f"could not be read ({type(exc).__name__}: {exc})"
            self._note(DiagnosticLevel.ERROR, file_name, reason)
            return ConfigFile(path=file_name, parse_error=reason)
        if config.parse_error:
            self._note(DiagnosticLevel.WARNING, file_name, config.parse_error)
        self._note(DiagnosticLevel.INFO, file_name, *notes)
        return config

    def _payload(self, name: str, limit: int, what: str, *, missing: str | None = None) -> tuple[str, bytes] | None:
        """(name as found, bytes), or None when absent (a warning if ``missing`` says one) or unusable (a warning)."""
        entry = self.files.get(name.lower())
        if entry is None:
            if missing is not None:
                self._note(DiagnosticLevel.WARNING, name, missing)
            return None
        try:
            return os_name(entry.name), self._read(entry, limit, what)
        except _Unreadable as exc:
            self._note(DiagnosticLevel.WARNING, os_name(entry.name), f"{exc}; treated as unknown")
            return None

    def _bindings(self) -> list[SslBinding] | None:
        found = self._payload("sslcert.txt", TEXT_LIMIT, "netsh output",
                              missing="missing (netsh http show sslcert > sslcert.txt); HTTP.sys bindings unknown")
        if found is None:
            return None
        name, data = found
        try:
            bindings, notes = parse_sslcert_with_notes(data)
        except NetshParseError as exc:
            self._note(DiagnosticLevel.WARNING, name, f"{exc}; HTTP.sys bindings unknown")
            return None
        self._note(DiagnosticLevel.INFO, name, *notes)
        return bindings

    def _json(self, name: str) -> tuple[str, object] | None:
        """(name as found, decoded JSON) or ``None`` when absent or unusable (with a diagnostic)."""
        found = self._payload(name, TEXT_LIMIT, "a PowerShell JSON export")
        if found is None:
            return None
        file_name, data = found
        try:
            return file_name, loads_powershell_json(data)
        except PowerShellJsonError as exc:
            self._note(DiagnosticLevel.WARNING, file_name, f"{exc}; treated as unknown")
            return None

    def _services(self) -> list[Service] | None:
        found = self._json("services.json")
        if found is None:
            return None
        name, value = found
        if value is None:
            self._note(DiagnosticLevel.INFO, name, "is empty: no SSIS Scale Out service was exported")
        services, notes = services_from_json(value)
        self._note(DiagnosticLevel.LOW, name, *notes)
        return services

    def _keys(self, root: CertificateStore | None, my: CertificateStore | None) -> None:
        found = self._json("keys.json")
        if found is None:
            return
        name, value = found
        facts, notes = key_facts_from_json(value)
        self._note(DiagnosticLevel.LOW, name, *notes)
        unmatched = apply_key_facts(facts, (root, my))
        if unmatched:
            listed = ", ".join(f"{f.store or '?'}\\{f.thumbprint}" for f in unmatched[:5])
            more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
            self._note(DiagnosticLevel.INFO, name,
                       f"{len(unmatched)} row(s) name certificates not exported under certs/: {listed}{more}")

    def _parsed(self, name: str, parse: Callable[[object], tuple[_T, list[str]]]) -> _T | None:
        """A JSON artefact through its parser (whose notes are LOW), or None when absent or unusable."""
        found = self._json(name)
        if found is None:
            return None
        file_name, value = found
        parsed, notes = parse(value)
        self._note(DiagnosticLevel.LOW, file_name, *notes)
        return parsed

    def _identity(self) -> HostIdentity:
        identity = self._parsed("host.json", lambda value: host_from_json(value, self.name))
        return HostIdentity(computer_name=self.name) if identity is None else identity

    def _subfolder(
        self, listing: dict[str, os.DirEntry[str]], prefix: str, name: str, unknown: str, hint: str = ""
    ) -> os.DirEntry[str] | None:
        """The real folder ``name`` of ``listing``; else None and a warning that says what is ``unknown``."""
        entry = listing.get(name.lower())
        if entry is not None and _is_link(entry):
            self._note(DiagnosticLevel.WARNING, prefix + os_name(entry.name),
                       f"is a symbolic link; links are not followed, so {unknown}")
            return None
        if entry is None or not _is_dir(entry):
            self._note(DiagnosticLevel.WARNING, prefix + name, f"missing: {unknown}{hint}")
            return None
        return entry

    def _stores(self) -> tuple[CertificateStore | None, CertificateStore | None]:
        certs = self._subfolder(self.files, "", "certs", "the Root and My stores are unknown",
                                " (export them to certs/Root, certs/My)")
        if certs is None:
            return None, None
        certs_name = os_name(certs.name)
        folders = self._listing(certs.path, certs_name + "/")
        return (
            self._guarded(f"{certs_name}/Root", None, lambda: self._store(folders, certs_name, "Root")),
            self._guarded(f"{certs_name}/My", None, lambda: self._store(folders, certs_name, "My")),
        )

    def _store(
        self, folders: dict[str, os.DirEntry[str]], certs_name: str, name: Literal["Root", "My"]
    ) -> CertificateStore | None:
        folder = self._subfolder(folders, f"{certs_name}/", name, f"LocalMachine\\{name} is unknown")
        if folder is None:
            return None
        prefix = f"{certs_name}/{os_name(folder.name)}/"
        certificates: list[Certificate] = []
        seen: dict[str, str] = {}
        for entry in self._listing(folder.path, prefix).values():
            source = prefix + os_name(entry.name)
            for certificate in self._certificate_file(entry, source):
                first = seen.get(certificate.thumbprint)
                if first is not None:
                    self._note(DiagnosticLevel.INFO, source,
                               f"the same certificate as {first} ({certificate.thumbprint}); counted once")
                    continue
                seen[certificate.thumbprint] = source
                certificates.append(certificate)
        return CertificateStore(name=name, certificates=certificates)

    def _certificate_file(self, entry: os.DirEntry[str], source: str) -> list[Certificate]:
        if _is_dir(entry):
            self._note(DiagnosticLevel.INFO, source, "ignored: a folder inside a certificate store folder")
            return []
        stem, dot, extension = entry.name.rpartition(".")
        suffix = f".{extension.lower()}" if dot and stem else ""
        if suffix not in CERT_SUFFIXES:
            self._note(DiagnosticLevel.INFO, source,
                       f"ignored: {suffix!r} is not a certificate export (.cer, .crt, .pem, .der)")
            return []
        try:
            data = self._read(entry, CERT_LIMIT, "a certificate")
            certificates, notes = load_certificates_with_notes(data, source=source)
        except _Unreadable as exc:
            self._note(DiagnosticLevel.LOW, source, f"ignored: the file {exc}")
            return []
        except CertificateParseError as exc:
            self._note(DiagnosticLevel.LOW, source, f"ignored: {exc}")
            return []
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd file must not cost the store
            self._note(DiagnosticLevel.ERROR, source, f"could not be read ({type(exc).__name__}: {exc})")
            return []
        self._note(DiagnosticLevel.INFO, source, *notes)
        return certificates

    def _collection(self, master: ConfigFile | None, worker: ConfigFile | None) -> Collection:
        if master is not None or worker is not None:
            return Collection(transport="evidence")
        reason = (
            "the node folder is empty" if not self.files
            else f"neither {MASTER_FILE} nor {WORKER_FILE} is in the node folder"
        )
        return Collection(state=CollectionState.NO_CONFIG, reason=reason, transport="evidence")


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """A real folder: a link to a folder is not one (links are never followed)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a file"


def _positive_env(name: str, default: float) -> float:
    """A positive number from the environment; anything else falls back to ``default`` (logged)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        log.warning("$%s=%r is not a positive number; using %g", name, raw, default)
        return default
    return value


def _size(count: int) -> str:
    return f"{count / MIB:.1f} MiB" if count >= MIB else f"{count} bytes"
