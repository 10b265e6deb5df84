"""Reading a file someone handed us (a plan to apply, a runbook's result) without trusting what it is.

A result file comes back from a node, a plan may have been edited since it was reviewed: either could be
a link to somewhere else, a named pipe that never ends, a device or a file of gigabytes. So the file is
opened without following a final link and without blocking, must be a regular file, and is refused when
it is larger than the caller's limit — before any of it is read, and again if it grows while it is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
)
"""No final link followed, no wait on a pipe: how every file from outside is opened (the evidence reader too)."""
MIB = 1024 * 1024


class UnsafeFile(OSError):
    """The file is a link, not a regular file, or larger than allowed; the message says which."""


def read_limited(path: Path, limit: int, *, named: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); raises :class:`UnsafeFile` or OSError.

    A link is refused, except for a file the user ``named`` on the command line (an inventory kept
    elsewhere and linked in is theirs to choose); a file found inside a folder is never a link."""
    if not named and path.is_symlink():
        raise UnsafeFile(f"{path} is a symbolic link; links are not followed")
    fd = os.open(path, OPEN_FLAGS & ~getattr(os, "O_NOFOLLOW", 0) if named else OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{path} is not a regular file")
        if info.st_size > limit:
            raise UnsafeFile(f"{path} is larger than {limit} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, min(limit + 1 - total, 1 << 20)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UnsafeFile(f"{path} grew past {limit} bytes while it was read")
        return b"".join(chunks)
    finally:
        os.close(fd)
