"""The lab reads no body before it has authenticated the request, and no body above its size cap.

A 400 MB POST is announced with its Content-Length and then streamed; the lab must answer from the headers
(401 without credentials, 413 above the cap) and close, so its resident memory stays where it was. RSS is
read from /proc/<pid>/status of the lab's own process.
"""

from __future__ import annotations

import base64
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scaleguard.lab.process import LabProcess
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import LAB_USER
from scaleguard.lab.wsman.server import MAX_BODY

pytestmark = pytest.mark.lab

PASSWORD = "Lab-" + secrets.token_urlsafe(12)
HUGE = 400 * 1000 * 1000
CHUNK = b"\0" * (1 << 20)
MAX_GROWTH = 16 * 1024 * 1024  # bytes of RSS a refused 400 MB request may cost the lab


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def _post_huge(port: int, authorization: str | None) -> tuple[bytes, int]:
    """Announce HUGE bytes, then stream them until the lab hangs up (bounded: HUGE bytes or 60 s)."""
    headers = [
        "POST /wsman HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/soap+xml;charset=UTF-8",
        f"Content-Length: {HUGE}",
    ]
    if authorization:
        headers.append(f"Authorization: {authorization}")
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        answer = sock.recv(4096)  # the lab answers from the headers alone
        deadline = time.monotonic() + 60
        try:
            while sent < HUGE and time.monotonic() < deadline:
                sent += sock.send(CHUNK)
        except OSError:
            pass  # the lab closed the connection: the rest of the body was never read
    return answer, sent


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    evidence = tmp_path_factory.mktemp("limits") / "contoso"
    demo_scenario(1, seed=2, defects=False).write(evidence)
    with LabProcess(evidence, tmp_path_factory.mktemp("lab"), PASSWORD) as running:
        yield running


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, b" 401 "), ("Basic " + base64.b64encode(f"{LAB_USER}:{PASSWORD}".encode()).decode(), b" 413 ")],
    ids=["unauthenticated", "over-the-cap"],
)
def test_a_400_mb_post_is_refused_from_its_headers_without_raising_the_labs_memory(
    lab: LabProcess, authorization: str | None, status: bytes
) -> None:
    pid = lab.pid
    assert pid is not None
    port = int(yaml.safe_load(lab.inventory.read_text(encoding="utf-8"))["clusters"][0]["masters"][0]["port"])
    before = _rss(pid)
    answer, sent = _post_huge(port, authorization)
    after = _rss(pid)
    print(f"sent {sent / 2**20:.1f} MiB; lab RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    assert answer.split(b"\r\n", 1)[0].startswith(b"HTTP/1.") and status in answer.split(b"\r\n", 1)[0]
    assert b"Connection: close" in answer
    assert sent < HUGE  # the lab hung up instead of reading 400 MB
    assert after - before < MAX_GROWTH, f"RSS grew by {(after - before) / 2**20:.1f} MiB"


def test_the_cap_leaves_room_for_the_largest_envelope_the_client_sends() -> None:
    from scaleguard.remoting.channel import STDIN_CHUNK

    base64_chunk = (STDIN_CHUNK + 2) // 3 * 4
    assert base64_chunk + 8 * 1024 < MAX_BODY  # a full stdin chunk, its SOAP envelope and the encryption frame
