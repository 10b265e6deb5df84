"""scaleguard.parallel: forked work answers like inline work — values back, exceptions re-raised, every job run."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from scaleguard import parallel

HAS_FORK = os.name == "posix" and "fork" in multiprocessing.get_all_start_methods()
needs_fork = pytest.mark.skipif(not HAS_FORK, reason="fork is not available on this platform")


@pytest.fixture(autouse=True)
def _forking_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Earlier tests may leave a daemon thread behind, and CI may have one CPU: either would (rightly)
    switch forking off, and these tests are about what happens when it is on."""
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(parallel, "cpu_count", lambda: 2)


class _Picky(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ wants two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def _fail(message: str) -> None:
    raise ValueError(message)


@needs_fork
def test_a_task_runs_in_a_child_and_returns_its_value() -> None:
    task = parallel.Task(lambda: (os.getpid(), [1, "two", {"three": 3}]))
    pid, value = task.result()
    assert pid != os.getpid()
    assert value == [1, "two", {"three": 3}]


@needs_fork
def test_a_childs_exception_is_raised_in_the_parent_with_its_traceback() -> None:
    task: parallel.Task[None] = parallel.Task(lambda: _fail("broken evidence"))
    with pytest.raises(ValueError, match="broken evidence") as caught:
        task.result()
    assert any("forked audit worker" in note and "_fail" in note for note in caught.value.__notes__)


@needs_fork
def test_an_exception_that_cannot_travel_becomes_a_child_error() -> None:
    def picky() -> None:
        raise _Picky("a", "b")

    with pytest.raises(parallel.ChildError, match=r"_Picky: a/b"):
        parallel.Task(picky).result()


@needs_fork
def test_a_child_that_dies_without_answering_is_an_error() -> None:
    with pytest.raises(parallel.ChildError, match="died"):
        parallel.Task(lambda: os._exit(3)).result()


def test_without_fork_the_task_runs_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEGUARD_PARALLEL", "off")
    assert not parallel.enabled()
    ran: list[int] = []
    task = parallel.Task(lambda: ran.append(os.getpid()) or "done")
    assert ran == [os.getpid()], "ran at once, in this process"
    assert task.result() == "done"
    with pytest.raises(ValueError, match="inline failure"):
        parallel.Task(lambda: _fail("inline failure")).result()


def test_fork_is_not_used_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not parallel.enabled()
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("fork", [True, False])
def test_run_all_runs_every_job_and_raises_the_first_failure(tmp_path: Path, fork: bool) -> None:
    def write(name: str) -> None:
        (tmp_path / name).write_text(name)

    jobs = [
        lambda: write("a"),
        lambda: _fail("first"),
        lambda: write("b"),
        lambda: _fail("second"),
        lambda: write("c"),
    ]
    with pytest.raises(ValueError, match="first"):
        parallel.run_all(jobs, workers=2, fork=fork)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


@needs_fork
def test_run_all_shares_the_jobs_between_this_process_and_a_child(tmp_path: Path) -> None:
    def record(index: int) -> None:
        (tmp_path / str(index)).write_text(str(os.getpid()))
        time.sleep(0.05)  # long enough that the child, started a few ms later, takes jobs too

    parallel.run_all([functools.partial(record, i) for i in range(6)], workers=2)
    pids = {(tmp_path / str(i)).read_text() for i in range(6)}
    assert len(pids) == 2 and str(os.getpid()) in pids


def _slow_pid(item: int) -> tuple[int, int]:
    time.sleep(0.01)  # long enough that the child, started a few ms later, takes slices too
    return item * item, os.getpid()


@needs_fork
def test_shared_map_keeps_order_and_shares_the_slices_with_a_child() -> None:
    ran: list[int] = []
    results = parallel.shared_map(_slow_pid, range(40), chunks=10, meanwhile=lambda: ran.append(os.getpid()))
    assert [square for square, _pid in results] == [i * i for i in range(40)]
    assert {pid for _square, pid in results} == {os.getpid(), next(p for _, p in results if p != os.getpid())}
    assert ran == [os.getpid()], "the caller's own work ran once, here"


def test_shared_map_without_fork_runs_meanwhile_then_the_items_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEGUARD_PARALLEL", "off")
    order: list[object] = []
    results = parallel.shared_map(
        lambda i: order.append(i) or i + 1, [1, 2, 3], meanwhile=lambda: order.append("meanwhile")
    )
    assert results == [2, 3, 4]
    assert order == ["meanwhile", 1, 2, 3]


def test_shared_map_keeps_fewer_than_min_items_here() -> None:
    results = parallel.shared_map(_slow_pid, range(5), min_items=6)
    assert results == [(i * i, os.getpid()) for i in range(5)]


@needs_fork
@pytest.mark.parametrize("failing", [0, 39], ids=["a slice this process may take", "the last slice"])
def test_shared_map_raises_a_failure_from_either_process(failing: int) -> None:
    def square(item: int) -> int:
        if item == failing:
            raise ValueError(f"item {item} is broken")
        time.sleep(0.002)
        return item * item

    with pytest.raises(ValueError, match=f"item {failing} is broken"):
        parallel.shared_map(square, range(40), chunks=20)


@needs_fork
def test_shared_map_reports_a_child_that_dies_without_answering() -> None:
    parent = os.getpid()

    def die_in_the_child(item: int) -> int:
        time.sleep(0.005)
        if os.getpid() != parent:
            os._exit(3)
        return item

    with pytest.raises(parallel.ChildError, match="died"):
        parallel.shared_map(die_in_the_child, range(40), chunks=20)


@needs_fork
def test_shared_map_reaps_the_child_when_the_callers_work_fails() -> None:
    children_before = len(multiprocessing.active_children())
    with pytest.raises(ValueError, match="bad policy"):
        parallel.shared_map(_slow_pid, range(10), meanwhile=lambda: _fail("bad policy"))
    assert len(multiprocessing.active_children()) == children_before


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with parallel.gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_gc_paused_leaves_no_young_collection_behind() -> None:
    """Objects made during the pause are promoted at its end, so the next allocation does not trigger a
    young collection over all of them."""
    with parallel.gc_paused():
        kept = [{} for _ in range(50_000)]
        assert gc.get_count()[0] > 10_000
    assert gc.get_count()[0] < 1_000
    assert len(kept) == 50_000


@needs_fork
def test_shared_maps_child_does_the_errand_first_and_its_answer_settles_it() -> None:
    errand = parallel.Deferred(lambda: ("written by", os.getpid()))
    results = parallel.shared_map(_slow_pid, range(40), chunks=10, errand=errand)
    assert [square for square, _pid in results] == [i * i for i in range(40)]
    helper = next(pid for _square, pid in results if pid != os.getpid())
    assert errand.result() == ("written by", helper), "the helper that shared the slices did the errand"
    assert errand.take() is None, "taken once"


@needs_fork
def test_an_errands_failure_is_its_own_result_not_the_maps() -> None:
    errand: parallel.Deferred[None] = parallel.Deferred(lambda: _fail("snapshot.json not writable"))
    results = parallel.shared_map(_slow_pid, range(20), chunks=10, errand=errand)
    assert [square for square, _pid in results] == [i * i for i in range(20)]
    with pytest.raises(ValueError, match="snapshot.json not writable") as caught:
        errand.result()
    assert any("forked audit worker" in note for note in caught.value.__notes__)


def test_an_errand_no_helper_took_runs_here_once_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEGUARD_PARALLEL", "off")
    calls: list[int] = []
    errand = parallel.Deferred(lambda: calls.append(os.getpid()) or len(calls))
    assert parallel.shared_map(lambda i: i + 1, [1, 2, 3], errand=errand) == [2, 3, 4]
    assert calls == [], "not done before it is asked for"
    assert errand.result() == 1
    assert errand.result() == 1
    assert calls == [os.getpid()]


@needs_fork
def test_an_errand_whose_helper_died_is_an_error() -> None:
    errand: parallel.Deferred[None] = parallel.Deferred(lambda: os._exit(3))
    with pytest.raises(parallel.ChildError, match="died"):
        parallel.shared_map(_slow_pid, range(20), chunks=10, errand=errand)
    with pytest.raises(parallel.ChildError, match="without its result"):
        errand.result()
