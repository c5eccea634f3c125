"""The make run supervisor's decisions, with scripted children and a hand-driven clock (the
real processes are exercised in tests/e2e/test_supervisor.py)."""

import io
import re
from pathlib import Path

from infra.supervisor import Supervisor
from runtime.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeChild:
    """A child whose exits and health the test decides."""

    def __init__(self, name: str, log_file: Path, fail_starts: int = 0) -> None:
        self.name = name
        self.log_file: Path | None = log_file
        self.fail_starts = fail_starts
        self.starts = 0
        self.alive = False
        self.code: int | None = None
        self.healthy = True
        self.killed = 0
        self.stopped = 0

    @property
    def pid(self) -> int | None:
        return 1000 + self.starts if self.alive else None

    def start(self) -> None:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port busy")
        self.alive, self.code = True, None

    def running(self) -> bool:
        return self.alive

    def returncode(self) -> int | None:
        return self.code

    def answering(self) -> bool:
        return self.healthy

    def exit(self, code: int) -> None:
        self.alive, self.code = False, code

    def kill(self) -> None:
        self.killed += 1
        self.exit(-9)

    def stop(self) -> None:
        self.stopped += 1
        self.alive = False


def make(tmp_path: Path, *names: str, **kwargs: int) -> tuple[Supervisor, list[FakeChild],
                                                               Clock, io.StringIO]:
    children = []
    for name in names:
        log = tmp_path / f"{name}.log"
        log.write_text(f"{name} line 1\n{name} line 2\n")
        children.append(FakeChild(name, log, **kwargs))
    clock, out = Clock(), io.StringIO()
    supervisor = Supervisor(list(children), out, clock=clock,
                            backoff=lambda: Backoff(0.5, 4.0, reset_after_s=30.0),
                            hung_after_s=10.0)
    return supervisor, children, clock, out


def test_a_crashed_child_is_reported_and_restarted_after_the_backoff(tmp_path: Path) -> None:
    supervisor, [nats, router], clock, out = make(tmp_path, "nats-server", "router")
    supervisor.start_all()
    assert "router started (pid 1001)" in out.getvalue()
    clock.now += 12
    router.exit(-9)
    assert supervisor.tick() is None
    report = out.getvalue()
    assert "router exited (-9) after 12.0 s; restarting in 0.5 s" in report
    assert "  | router line 2" in report  # the tail of its log
    clock.now += 0.4
    supervisor.tick()
    assert router.starts == 1  # not before the back-off
    clock.now += 0.1
    supervisor.tick()
    assert router.starts == 2 and router.alive and nats.starts == 1
    assert "router restarted (pid 1002)" in out.getvalue()
    assert supervisor.restarts("router") == 1


def test_a_clean_exit_nobody_asked_for_is_restarted_too(tmp_path: Path) -> None:
    supervisor, [gateway], clock, _ = make(tmp_path, "gateway")
    supervisor.start_all()
    gateway.exit(0)  # a SIGTERM from someone else: the gateway drained and left
    supervisor.tick()
    clock.now += 0.5
    supervisor.tick()
    assert gateway.starts == 2 and gateway.alive


def test_a_configuration_error_stops_with_the_childs_reason(tmp_path: Path) -> None:
    supervisor, [nats, gateway], _, out = make(tmp_path, "nats-server", "gateway")
    assert gateway.log_file is not None
    gateway.log_file.write_text('{"event": "x"}\nconfiguration error: COURIER_GATEWAY_PROT: '
                                'unknown configuration key\n')
    supervisor.start_all()
    gateway.exit(2)
    assert supervisor.tick() == 2
    assert ("gateway: configuration error: COURIER_GATEWAY_PROT: unknown configuration key"
            in out.getvalue())
    assert gateway.starts == 1  # never restarted
    supervisor.stop_all()
    assert nats.stopped == 1 and gateway.stopped == 1


def test_a_child_that_keeps_crashing_is_reported_once_and_retried_slowly(
        tmp_path: Path) -> None:
    supervisor, [router], clock, out = make(tmp_path, "router")
    supervisor.start_all()
    delays = []
    for _ in range(7):
        router.exit(1)
        supervisor.tick()
        delay = float(out.getvalue().rsplit("restarting in ", 1)[1].split(" s")[0])
        delays.append(delay)
        clock.now += delay
        supervisor.tick()
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert out.getvalue().count("router keeps crashing") == 1
    assert router.starts == 8


def test_a_start_that_raises_is_retried(tmp_path: Path) -> None:
    supervisor, [nats], clock, out = make(tmp_path, "nats-server", fail_starts=2)
    supervisor.start_all()
    assert "nats-server did not start: port busy; restarting in 0.5 s" in out.getvalue()
    clock.now += 0.5
    supervisor.tick()
    clock.now += 1.0
    supervisor.tick()
    assert nats.alive and nats.starts == 3


def test_a_child_that_stops_answering_is_killed_and_restarted(tmp_path: Path) -> None:
    supervisor, [nats], clock, out = make(tmp_path, "nats-server")
    supervisor.start_all()
    nats.healthy = False
    for _ in range(10):  # silent from the first probe on, 9.9 s
        supervisor.tick()
        clock.now += 1.1
    assert nats.killed == 0  # a short silence is tolerated
    clock.now = 200.0
    supervisor.tick()
    assert nats.killed == 1
    assert re.search(r"nats-server running but not answering for \d+ s; killing it",
                     out.getvalue())
    nats.healthy = True
    supervisor.tick()  # sees the exit
    clock.now += 0.5
    supervisor.tick()
    assert nats.alive and nats.starts == 2
