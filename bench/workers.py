"""Generator processes: spawned, stepped through named phases together, their reports collected.

The orchestrator starts one process per plan (``multiprocessing`` spawn context, so nothing of
the orchestrator's state leaks in). Each runs ``work(phases, plan)`` on uvloop and returns a
picklable report. ``await phases.reach(name, payload)`` in a worker sends ``payload`` to the
orchestrator and waits for its go; the orchestrator collects every worker's payload with
``gather(name)`` and answers with ``release(values)``. Every wait has a deadline; a worker that
raises or dies fails the scenario, and ``stop`` ends each process by its own handle.
"""

import asyncio
import multiprocessing
import traceback
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final, Generic, TypeVar

import uvloop

from bench.system import raise_file_limit

PlanT = TypeVar("PlanT")
WorkFn = Callable[["Phases", PlanT], Coroutine[Any, Any, Any]]
PHASE_TIMEOUT_S: Final = 300.0
JOIN_TIMEOUT_S: Final = 10.0
_RESULT: Final = "__result__"
_FAILED: Final = "__failed__"


class WorkerFailed(RuntimeError):
    """A generator process raised, died or missed a deadline."""


class Phases:
    """A worker's side of the phase protocol."""

    def __init__(self, conn: Connection, index: int) -> None:
        self._conn = conn
        self.index = index

    async def reach(self, name: str, payload: object = None,
                    wait_s: float = PHASE_TIMEOUT_S) -> Any:
        """Report ``payload`` at phase ``name``; return the value the orchestrator releases."""
        self._conn.send((name, payload))
        return await asyncio.to_thread(_recv, self._conn, wait_s, f"go after {name!r}")


class Generators(Generic[PlanT]):
    """The orchestrator's side: one process per plan, all running ``work``."""

    def __init__(self, work: WorkFn[PlanT], plans: Sequence[PlanT]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[BaseProcess] = []
        for index, plan in enumerate(plans):
            parent, child = context.Pipe()
            process = context.Process(target=_child_main, args=(child, index, work, plan),
                                      name=f"bench-generator-{index}", daemon=True)
            self._conns.append(parent)
            self._processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    def __enter__(self) -> "Generators[PlanT]":
        for process in self._processes:
            process.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.stop(graceful=exc_type is None)

    async def gather(self, name: str, wait_s: float = PHASE_TIMEOUT_S) -> list[Any]:
        """Every worker's payload at phase ``name``."""
        return await asyncio.gather(*(self._expect(index, name, wait_s)
                                      for index in range(len(self._conns))))

    def release(self, values: Sequence[object] | None = None) -> None:
        """Let every worker go on; worker ``i`` gets ``values[i]`` (None if no values)."""
        for index, conn in enumerate(self._conns):
            conn.send(None if values is None else values[index])

    async def results(self, wait_s: float = PHASE_TIMEOUT_S) -> list[Any]:
        """Every worker's report, once all have returned."""
        return await self.gather(_RESULT, wait_s)

    def stop(self, graceful: bool = True) -> None:
        """Join the processes (at once unless ``graceful``); terminate, then kill, any still
        running."""
        for process in self._processes:
            if process.pid is None:
                continue
            process.join(JOIN_TIMEOUT_S if graceful else 0)
            if process.is_alive():
                process.terminate()
                process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()

    async def _expect(self, index: int, name: str, wait_s: float) -> Any:
        process = self._processes[index]
        message = await asyncio.to_thread(_recv, self._conns[index], wait_s,
                                          f"generator {index} at {name!r}", process)
        got, payload = message
        if got == _FAILED:
            raise WorkerFailed(f"generator {index} failed:\n{payload}")
        if got != name:
            raise WorkerFailed(f"generator {index} reached {got!r}, expected {name!r}")
        return payload


def _recv(conn: Connection, timeout: float, what: str,
          process: BaseProcess | None = None) -> Any:
    """Blocking receive with a deadline, polled so that a dead peer process is noticed."""
    waited = 0.0
    while waited < timeout:
        if conn.poll(0.2):
            try:
                return conn.recv()
            except EOFError:
                raise WorkerFailed(f"{what}: the other side closed the pipe") from None
        waited += 0.2
        if process is not None and not process.is_alive() and not conn.poll(0):
            raise WorkerFailed(f"{what}: the process exited with {process.exitcode}")
    raise WorkerFailed(f"{what}: nothing after {timeout:.0f}s")


def _child_main(conn: Connection, index: int, work: WorkFn[Any], plan: Any) -> None:
    raise_file_limit()
    try:
        result: Any = uvloop.run(work(Phases(conn, index), plan))
    except BaseException:
        conn.send((_FAILED, traceback.format_exc()))
    else:
        conn.send((_RESULT, result))
    finally:
        conn.close()
