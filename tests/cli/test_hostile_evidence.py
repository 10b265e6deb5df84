"""One hostile node cannot hang, crash or leak the audit: each case is an evidence folder built here.

Every case is a healthy lab cluster (``demo_scenario``) with one node made hostile: backtracking bait,
links out of the folder, special files, names that are not UTF-8 or that carry terminal control codes,
JSON with lone surrogates, a node over its read budget. The audit runs as the CLI does (a subprocess,
with a timeout) and must finish within its bound, exit 0, 1 or 3, write ``findings.json``,
``snapshot.json`` and ``report.html``, and no byte of any file outside the evidence folder may appear
in any output or on stdout/stderr: a secret marker is planted outside the folder (and in the audit's
environment, for ``/proc/self/environ``) and linked to.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from scaleguard.lab.evidence import encode_text
from scaleguard.lab.scenario import demo_scenario

SECRET = "SG-SECRET-" + secrets.token_hex(8)
SECRET_ENV = "SCALEGUARD_TEST_SECRET"
AUDIT_BOUND_S = 120
"""Generous for a loaded 2-CPU machine: a healthy 3-node audit takes about 3 s, a hang takes forever."""
TERMINAL_CONTROLS = (b"\x1b", b"\r", b"\x07", "\u202e".encode(), "\u0085".encode(), "\u009b".encode())


def _cluster(tmp_path: Path) -> Path:
    folder = tmp_path / "evidence" / "CONTOSO"
    demo_scenario(2, seed=3, defects=False).write(folder)
    return folder


def _outside(tmp_path: Path) -> Path:
    """Files the audit must never read: the secret at the start (where a quoted snippet would take it)
    and in the file names (a followed store folder used to list them)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for name in ("secret.txt", f"{SECRET}.cer", f"{SECRET}.pem"):
        (folder / name).write_text(f"{SECRET}\n-----BEGIN CERTIFICATE-----\n{SECRET}\n", encoding="utf-8")
    (folder / "WorkerSettings.config").write_text(
        f"<WorkerSettings><DisplayName>{SECRET}</DisplayName></WorkerSettings>", encoding="utf-8"
    )
    return folder


def _audit(
    evidence: Path | bytes, out: Path, home: Path, *, extra_env: dict[str, str] | None = None,
    history: tuple[str, ...] = ("--history", "off"), cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    code = "import sys; from scaleguard.cli.main import app; sys.argv[0] = 'scaleguard'; app()"
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), SECRET_ENV: SECRET,
           "NO_COLOR": "1"}
    env.pop("SCALEGUARD_HISTORY", None)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-c", code, "audit", "--evidence", evidence, "--out", str(out), *history],
        capture_output=True, timeout=AUDIT_BOUND_S, check=False, env=env, cwd=cwd,
    )


def _assert_complete_and_clean(done: subprocess.CompletedProcess[bytes], out: Path) -> dict[str, object]:
    assert done.returncode in (0, 1, 3), done.stderr.decode("utf-8", "replace")[-3000:]
    for name in ("findings.json", "snapshot.json", "report.html"):
        assert (out / name).is_file(), f"{name} missing; stderr: {done.stderr[-2000:]!r}"
    markers = [SECRET.encode(), SECRET.encode("utf-16-le"), SECRET[:12].encode()]
    streams = {"stdout": done.stdout, "stderr": done.stderr}
    streams.update({str(path): path.read_bytes() for path in out.rglob("*") if path.is_file()})
    for where, data in streams.items():
        for marker in markers:
            assert marker not in data, f"a byte from outside the evidence folder reached {where}"
    for control in TERMINAL_CONTROLS:
        assert control not in done.stderr and control not in done.stdout
    snapshot: dict[str, object] = json.loads((out / "snapshot.json").read_text(encoding="utf-8"))
    return snapshot


def _node(snapshot: dict[str, object], name: str) -> dict[str, object]:
    [cluster] = snapshot["clusters"]  # type: ignore[misc]
    matches = [n for n in cluster["nodes"] if n["name"] == name]
    assert matches, [n["name"] for n in cluster["nodes"]]
    node: dict[str, object] = matches[0]
    return node


def _messages(node: dict[str, object]) -> list[str]:
    return [f"{d['source']}: {d['message']}" for d in node["diagnostics"]]  # type: ignore[attr-defined]


# --- each case: (mutate the cluster, check the snapshot) ------------------------------------------------

Case = tuple[Callable[[Path, Path], None], Callable[[dict[str, object]], None]]


def _link(link: Path, target: Path | str) -> None:
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)


def _expect(node: str, *fragments: str) -> Callable[[dict[str, object]], None]:
    def check(snapshot: dict[str, object]) -> None:
        text = "\n".join(_messages(_node(snapshot, node)))
        for fragment in fragments:
            assert fragment in text, text

    return check


CASES: dict[str, Case] = {
    "netsh-line-of-spaces-at-the-cap": (
        lambda c, _o: (c / "WORKER01" / "sslcert.txt").write_bytes(
            encode_text("a" + " " * (2 * 1024 * 1024 - 4) + "x", "utf-16-le", crlf=False)),
        _expect("WORKER01", "sslcert.txt: not `netsh http show sslcert` output"),
    ),
    "pem-repeated-begin-markers": (
        lambda c, _o: (c / "WORKER01" / "certs" / "Root" / "bad.pem").write_bytes(
            b"-----BEGIN A-----" * (1024 * 1024 // 17)),
        _expect("WORKER01", "certs/Root/bad.pem: ignored: not a certificate"),
    ),
    "certificate-file-linked-outside": (
        lambda c, o: _link(c / "WORKER01" / "certs" / "Root" / "x.cer", o / f"{SECRET}.cer"),
        _expect("WORKER01", "certs/Root/x.cer: ignored: the file is a symbolic link"),
    ),
    "sslcert-linked-to-proc-environ": (
        lambda c, _o: _link(c / "WORKER01" / "sslcert.txt", "/proc/self/environ"),
        _expect("WORKER01", "sslcert.txt: is a symbolic link; links are not followed"),
    ),
    "settings-file-linked-outside": (
        lambda c, o: _link(c / "WORKER01" / "WorkerSettings.config", o / "secret.txt"),
        _expect("WORKER01", "WorkerSettings.config: the file is a symbolic link"),
    ),
    "store-folder-linked-outside": (
        lambda c, o: _link(c / "WORKER01" / "certs" / "Root", o),
        _expect("WORKER01", "certs/Root: is a symbolic link; links are not followed"),
    ),
    "certs-folder-linked-outside": (
        lambda c, o: _link(c / "WORKER01" / "certs", o),
        _expect("WORKER01", "certs: is a symbolic link; links are not followed"),
    ),
    "node-folder-linked-outside": (
        lambda c, o: _link(c / "WORKER09", o),
        _expect("WORKER09", "the node folder 'WORKER09' is a symbolic link"),
    ),
    "named-pipe-and-device-link": (
        lambda c, _o: _pipe_and_device(c / "WORKER01"),
        _expect("WORKER01", "services.json: is not a regular file (it is a named pipe)",
                "keys.json: is a symbolic link"),
    ),
    "node-folder-name-not-utf8": (
        lambda c, _o: os.rename(bytes(c / "WORKER02"), bytes(c) + b"/WORKER\xff02"),
        lambda s: _check_node(s, "WORKER\\xff02"),
    ),
    "certificate-file-name-not-utf8": (
        lambda c, _o: _prefix_names(c / "WORKER01" / "certs" / "My", b"\xfe"),
        lambda s: _assert_sources(_node(s, "WORKER01"), "certs/My/\\xfe"),
    ),
    "node-name-with-terminal-codes": (
        lambda c, _o: os.rename(c / "WORKER02", c / "\x1b[2K\x1b[1A\x1b[32mAll clear\x1b[0m W2\r\x07\u202e\u009b"),
        lambda s: _check_node(s, "\x1b[2K\x1b[1A\x1b[32mAll clear\x1b[0m W2\r\x07\u202e\u009b"),
    ),
    "json-with-lone-surrogates": (
        lambda c, _o: (c / "WORKER01" / "host.json").write_text(
            '{"ComputerName": "WORKER01\\ud800", "\\udfff": "x", "Domain": "corp\\udc00"}', encoding="utf-8"),
        lambda s: _check_node(s, "WORKER01"),
    ),
}


def _pipe_and_device(node: Path) -> None:
    os.mkfifo(node / "services.json.tmp")
    (node / "services.json").unlink()
    (node / "services.json.tmp").rename(node / "services.json")
    _link(node / "keys.json", "/dev/zero")


def _prefix_names(folder: Path, prefix: bytes) -> None:
    for path in folder.iterdir():
        os.rename(bytes(path), bytes(folder) + b"/" + prefix + path.name.encode())


def _check_node(snapshot: dict[str, object], name: str) -> None:
    node = _node(snapshot, name)
    assert node["collection"]["state"] in ("ok", "no_config", "failed")  # type: ignore[index]


def _assert_sources(node: dict[str, object], prefix: str) -> None:
    my = node["my"]
    assert isinstance(my, dict)
    sources = [c["source"] for c in my["certificates"]]
    assert sources and all(s.startswith(prefix) for s in sources), sources


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_hostile_node_cannot_hang_crash_or_leak_the_audit(case: str, tmp_path: Path) -> None:
    mutate, check = CASES[case]
    cluster, outside = _cluster(tmp_path), _outside(tmp_path)
    mutate(cluster, outside)
    out = tmp_path / "out"
    done = _audit(cluster, out, tmp_path / "home")
    snapshot = _assert_complete_and_clean(done, out)
    check(snapshot)
    assert _node(snapshot, "MASTER01")["collection"]["state"] == "ok"  # type: ignore[index]


def test_a_cluster_folder_name_that_is_not_utf8_is_kept_escaped(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    renamed = bytes(cluster.parent) + b"/CONTOSO\xff"
    os.rename(bytes(cluster), renamed)
    out = tmp_path / "out"
    snapshot = _assert_complete_and_clean(_audit(renamed, out, tmp_path / "home"), out)
    [entry] = snapshot["clusters"]  # type: ignore[misc]
    assert entry["cluster"] == "CONTOSO\\xff"
    assert b"CONTOSO\\xff" in (out / "expiry.csv").read_bytes()


def test_a_node_over_its_read_budget_is_an_error_and_the_rest_is_audited(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    store = cluster / "WORKER01" / "certs" / "Root"
    for index in range(12):
        (store / f"junk{index:02d}.cer").write_bytes(os.urandom(100 * 1024))
    out = tmp_path / "out"
    done = _audit(cluster, out, tmp_path / "home", extra_env={"SCALEGUARD_NODE_BUDGET_MIB": "1"})
    snapshot = _assert_complete_and_clean(done, out)
    assert done.returncode == 3  # one node could not be assessed: the audit is incomplete
    worker = _node(snapshot, "WORKER01")
    assert worker["collection"]["state"] == "failed"  # type: ignore[index]
    assert "more than 1.0 MiB of files" in "\n".join(_messages(worker))
    for other in ("MASTER01", "WORKER02"):
        assert _node(snapshot, other)["collection"]["state"] == "ok"  # type: ignore[index]


@pytest.mark.parametrize("how", ["--history off", "SCALEGUARD_HISTORY=off"])
def test_history_off_means_no_history_at_all(how: str, tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    work, home, out = tmp_path / "work", tmp_path / "home", tmp_path / "out"
    work.mkdir()
    if how == "--history off":
        done = _audit(cluster, out, home, cwd=work)
    else:
        done = _audit(cluster, out, home, history=(), cwd=work, extra_env={"SCALEGUARD_HISTORY": "off"})
    _assert_complete_and_clean(done, out)
    assert list(work.iterdir()) == []  # no SQLite file named "off"
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]
    findings = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    assert findings.get("since_previous") is None
