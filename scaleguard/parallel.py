"""Run independent pieces of the audit in forked children, or in order where fork is not available.

Why fork and not threads or a process pool: the work is pure Python (the GIL serialises threads), and the
inputs are a large in-memory snapshot and its findings. A forked child inherits them copy-on-write, so
nothing is pickled on the way in; only what a child returns (if anything) travels back through a pipe.
A child's exception is sent back and re-raised in the parent, so a failure looks the same as in the
sequential path.

Forking is skipped — and everything runs in the calling process, in order — when the platform has no
``fork`` (Windows, and macOS' default is not relied upon either), when only one CPU is usable, when
another thread is alive (forking a multi-threaded process can deadlock on a lock held by that thread),
inside a child (no nested fan-out) or when ``SCALEGUARD_PARALLEL=off``.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import pickle
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")
_in_child = False


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def enabled() -> bool:
    """Whether work may be forked right now (see the module docstring for when it may not)."""
    if _in_child or os.environ.get("SCALEGUARD_PARALLEL", "").lower() in {"off", "0", "no", "false"}:
        return False
    if "fork" not in multiprocessing.get_all_start_methods() or os.name != "posix":
        return False
    return cpu_count() > 1 and threading.active_count() == 1


class ChildError(RuntimeError):
    """A forked child failed in a way that could not be sent back as its own exception."""


class Task(Generic[_T]):
    """``fn()`` running in a forked child (or already run, when forking is off); :meth:`result` joins it."""

    def __init__(self, fn: Callable[[], _T], *, fork: bool | None = None) -> None:
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._reader: Connection | None = None
        self._process: Any = None
        if not (enabled() if fork is None else fork):
            try:
                self._value = fn()
            except Exception as exc:  # noqa: BLE001 - re-raised by result(), as the forked path does
                self._error = exc
            return
        context = multiprocessing.get_context("fork")
        reader, writer = context.Pipe(duplex=False)
        self._process = context.Process(target=_child_main, args=(fn, writer), daemon=True)
        self._process.start()
        writer.close()
        self._reader = reader

    def result(self) -> _T:
        """The child's return value; its exception, re-raised here, if it raised one."""
        if self._reader is not None:
            try:
                ok, payload = pickle.loads(self._reader.recv_bytes())
            except EOFError:
                ok, payload = False, ChildError("a forked audit worker died without an answer")
            finally:
                self._reader.close()
                self._reader = None
                self._process.join()
            if ok:
                self._value = payload
            else:
                self._error = payload
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value  # type: ignore[return-value]  # set by fn() or by the child's answer


class Deferred(Generic[_T]):
    """Work that needs no CPU of its own: the forked helper of the next :func:`shared_map` given it as
    ``errand`` does it before taking slices, or, when no helper took it, this process does it once
    :meth:`result` is asked for. Where a :class:`Task` forks a child of its own, this saves that fork and
    the copy-on-write faults of a third process touching the same objects (≈0.07 s per 1,000-node audit,
    measured with ``snapshot.json`` as the errand)."""

    def __init__(self, fn: Callable[[], _T]) -> None:
        self._fn = fn
        self._taken = False
        self._outcome: tuple[bool, Any] | None = None

    def take(self) -> Callable[[], _T] | None:
        """The work, for one helper to do (None once taken); the helper then calls :meth:`settle`."""
        if self._taken:
            return None
        self._taken = True
        return self._fn

    def settle(self, ok: bool, payload: Any) -> None:
        """The helper's answer: (True, value) or (False, exception)."""
        self._outcome = (ok, payload)

    def result(self) -> _T:
        """The value (done here and now if no helper took the work); the work's exception, re-raised."""
        if not self._taken:
            self._taken = True
            try:
                self._outcome = (True, self._fn())
            except Exception as exc:  # noqa: BLE001 - re-raised below, as a helper's would be
                self._outcome = (False, exc)
        if self._outcome is None:
            raise ChildError("a forked audit worker took on work and ended without its result")
        ok, payload = self._outcome
        if not ok:
            raise payload
        return payload  # type: ignore[no-any-return]  # the value fn() returned


def _child_main(fn: Callable[[], Any], writer: Connection) -> None:
    global _in_child
    _in_child = True
    gc.disable()  # short-lived: the collector would only rescan the inherited heap (and copy its pages)
    try:
        answer = pickle.dumps((True, fn()), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        answer = _pickled_error(exc)
    writer.send_bytes(answer)
    writer.close()


def _pickled_error(exc: BaseException) -> bytes:
    return pickle.dumps((False, _portable(exc)), protocol=pickle.HIGHEST_PROTOCOL)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` with the child's traceback as a note, if it survives a round trip; else a ChildError."""
    where = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"(raised in a forked audit worker)\n{where}")
        pickle.loads(pickle.dumps(exc))  # an exception class with a custom __init__ may not unpickle
        return exc
    except Exception:  # noqa: BLE001 - fall back to the text, which always travels
        return ChildError(where)


def run_all(jobs: Sequence[Callable[[], None]], *, workers: int | None = None, fork: bool = True) -> None:
    """Run every job, spread over ``workers`` processes (default: the CPUs): this one and forked children.

    The processes take the next job from a shared queue as they finish one, so a long job and several
    short ones balance out; put the longest first. One child per extra CPU, not per job, because each
    forked child pays for the memory pages it and the parent then write (every object a Python process
    reads gets its reference count written), which for a 1,000-node audit is about a tenth of a second.
    Every job runs even if one fails; the first failure (in job order) is then raised. Without fork (or
    with ``fork=False``, for work too small to be worth one) the jobs run here, one after the other.
    """
    if not fork or not enabled() or len(jobs) < 2:
        _raise_first(_run_queue(jobs, None))
        return
    queue = _job_queue(len(jobs))
    try:
        helpers: list[Task[dict[int, BaseException]]] = [
            Task(functools.partial(_run_queue, jobs, queue), fork=True)
            for _ in range(min(len(jobs), max(1, workers or cpu_count())) - 1)
        ]
        failures = _run_queue(jobs, queue)
        for helper in helpers:
            failures.update(helper.result())
    finally:
        os.close(queue)
    _raise_first(failures)


def shared_map(
    fn: Callable[[_T], _R],
    items: Sequence[_T],
    *,
    chunks: int = 48,
    min_items: int = 2,
    meanwhile: Callable[[], object] | None = None,
    errand: Deferred[Any] | None = None,
) -> list[_R]:
    """``[fn(item) for item in items]``, computed by this process and one forked child together.

    The items are cut into ``chunks`` slices that both processes take from a shared queue, so they
    finish together whatever the slices cost (a master's folder holds a thousand certificates, a
    worker's fifteen) and whatever else this process does first: ``meanwhile`` (the caller's own work)
    runs here once, while the child already takes slices. The child sends each slice's results as soon
    as it has them and this process takes them in between its own slices, so when the queue is empty
    nearly everything has arrived: no child pickling everything at the end while this one waits, then
    unpickling it all. ``errand`` (independent work, see :class:`Deferred`) is done by the child before
    its first slice and settled here when its answer arrives. Without fork, or for fewer than
    ``min_items`` items (where a fork costs more than it saves), ``meanwhile`` then the items run here, in
    order, and ``errand`` is left for its own :meth:`Deferred.result`. A failure in ``fn`` (either
    process) or in ``meanwhile`` is raised here after the child has been reaped; the errand's own failure
    is its result's.
    """
    if len(items) < max(2, min_items) or not enabled():
        if meanwhile is not None:
            meanwhile()
        return [fn(item) for item in items]
    size = -(-len(items) // max(1, min(chunks, 255, len(items))))
    slices = [items[start : start + size] for start in range(0, len(items), size)]
    done: dict[int, list[_R]] = {}
    context = multiprocessing.get_context("fork")
    queue = _job_queue(len(slices))
    reader, writer = context.Pipe(duplex=False)
    _widen(writer)
    try:
        side = errand.take() if errand is not None else None
        child = context.Process(target=_slices_child, args=(fn, slices, queue, writer, side), daemon=True)
        child.start()
        writer.close()
        finished = False  # the child's last message has arrived
        try:
            if meanwhile is not None:
                meanwhile()
            for index in _taken(queue):
                done[index] = [fn(item) for item in slices[index]]
                while not finished and reader.poll():
                    finished = not _take_slice(reader, done, errand)
        except BaseException:
            reader.close()  # the child's next send fails and it exits; its results are of no use now
            child.join()
            raise
        try:
            while not finished:
                finished = not _take_slice(reader, done, errand)
        finally:
            child.join()
    finally:
        reader.close()
        os.close(queue)
    return [result for index in range(len(slices)) for result in done[index]]


def _slices_child(
    fn: Callable[[Any], Any],
    slices: list[Sequence[Any]],
    queue: int,
    writer: Connection,
    errand: Callable[[], Any] | None,
) -> None:
    """The child's side of :func:`shared_map`: (True, ERRAND, (ok, value or exception)) for the errand
    first, if there is one; (True, index, results) per slice, then (True, None, None); (False, exception)
    when ``fn`` fails."""
    global _in_child
    _in_child = True
    gc.disable()  # short-lived: the collector would only rescan the inherited heap (and copy its pages)
    try:
        if errand is not None:
            writer.send_bytes(_errand_answer(errand))
        for index in _taken(queue):
            results = [fn(item) for item in slices[index]]
            writer.send_bytes(pickle.dumps((True, index, results), protocol=pickle.HIGHEST_PROTOCOL))
        writer.send_bytes(pickle.dumps((True, None, None), protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        with suppress(OSError):  # the parent stopped listening (its own work failed)
            writer.send_bytes(_pickled_error(exc))
    finally:
        writer.close()


_ERRAND = -1
"""The slice index that marks the errand's answer in :func:`shared_map`'s pipe."""


def _errand_answer(errand: Callable[[], Any]) -> bytes:
    try:
        return pickle.dumps((True, _ERRAND, (True, errand())), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - the errand's failure is its result, not the map's
        return pickle.dumps((True, _ERRAND, (False, _portable(exc))), protocol=pickle.HIGHEST_PROTOCOL)


def _take_slice(reader: Connection, done: dict[int, Any], errand: Deferred[Any] | None) -> bool:
    """Store the child's next slice (or settle the errand); False at the child's end; raises the child's
    failure."""
    try:
        answer = pickle.loads(reader.recv_bytes())
    except EOFError:
        raise ChildError("a forked audit worker died without an answer") from None
    if not answer[0]:
        raise answer[1]
    _ok, index, results = answer
    if index is None:
        return False
    if index == _ERRAND:
        if errand is not None:
            errand.settle(*results)
        return True
    done[index] = results
    return True


def _widen(connection: Connection) -> None:
    """Let a pipe hold about a megabyte (Linux; elsewhere the default stays), so that the child does not
    wait for this process to finish a slice before it can send the next one of its own."""
    try:
        import fcntl  # POSIX only; shared_map never forks where it is missing
    except ImportError:
        return
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with suppress(OSError):
            fcntl.fcntl(connection.fileno(), setsize, 1 << 20)


def _job_queue(count: int) -> int:
    """A pipe holding one byte per job index: ``os.read(fd, 1)`` takes the next job in any process, and
    an empty, closed pipe reads as the end. Small enough (< 64 KiB) never to block the writer."""
    if count > 255:
        raise ValueError("at most 255 jobs per run")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, bytes(range(count)))
    finally:
        os.close(write_end)
    return read_end


def _run_queue(jobs: Sequence[Callable[[], None]], queue: int | None) -> dict[int, BaseException]:
    """Run jobs from ``queue`` (or all of them in order, when there is none); failures by job index."""
    failures: dict[int, BaseException] = {}
    indices: Iterator[int] = iter(range(len(jobs))) if queue is None else _taken(queue)
    for index in indices:
        try:
            jobs[index]()
        except Exception as exc:  # noqa: BLE001 - every job runs; failures are raised at the end
            failures[index] = _portable(exc) if _in_child else exc
    return failures


def _taken(queue: int) -> Iterator[int]:
    while byte := os.read(queue, 1):
        yield byte[0]


def _raise_first(failures: dict[int, BaseException]) -> None:
    if failures:
        raise failures[min(failures)]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The audit builds hundreds of thousands of small objects that all stay alive until it ends; the
    cyclic collector would rescan that growing heap again and again (about half a second per
    1,000-node audit) for garbage it does not produce. Reference counting still frees what is dropped."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            _promote_survivors()
            gc.enable()


def _promote_survivors() -> None:
    """Move everything allocated during the pause straight into the oldest generation.

    While the collector is off, every new object still counts towards the youngest generation, so the
    first allocation after ``gc.enable()`` would trigger a young collection that walks all of them
    (about 0.1 s after a 1,000-node audit) only to promote them, since they are all still alive.
    ``freeze`` + ``unfreeze`` moves them there directly (two list splices) and resets the counter; they
    are still collected by later full collections, so garbage cycles are not leaked."""
    gc.freeze()
    gc.unfreeze()
