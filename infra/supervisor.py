"""Keeps the child processes of ``make run`` running: restarts what crashes, reports it.

Each child (nats-server, the storage worker, the router, the push worker, the gateway) is
checked every tick:

- **exited** with status 2 (``runtime.service.EXIT_CONFIG``): its configuration is wrong and a
  restart would fail the same way. The supervisor prints the child's ``configuration error``
  line and asks to stop everything (``tick`` returns 2).
- **exited** otherwise (a crash, SIGKILL, SIGTERM from someone else, a failed start): reported
  with the tail of its log and started again after a back-off (``runtime.backoff``: 0.5 s,
  doubling up to 30 s; reset once a run lasted 30 s). A child that keeps failing quickly is
  reported once as crash-looping and retried at the slow end of the back-off.
- **running but not answering** (``answering()``, nats-server only: it must greet a new
  connection with ``INFO``) for ``HUNG_AFTER_S``: killed, then restarted like a crash.

The services reconnect to a restarted nats-server by themselves (same port, same store
directory), and JetStream redelivers whatever a killed worker had not acknowledged, so nothing
acknowledged is lost across a restart.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, TextIO

from infra.processes import log_tail
from runtime.backoff import Backoff
from runtime.service import EXIT_CONFIG

#: A running child that has not answered its health probe for this long is killed.
HUNG_AFTER_S: Final = 10.0
#: Health probes of one child are at least this far apart.
PROBE_EVERY_S: Final = 1.0
#: Log lines shown with each crash report.
TAIL_LINES: Final = 5
CONFIG_ERROR_MARK: Final = "configuration error:"


class Child(Protocol):
    """A process the supervisor can start, probe and stop (``ServiceProcess``,
    ``NatsServer``)."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def log_file(self) -> Path | None: ...

    def start(self) -> None:
        """Start the process; may raise if it cannot (the supervisor retries)."""

    def running(self) -> bool: ...

    def returncode(self) -> int | None: ...

    def answering(self) -> bool:
        """Health probe (called every tick while it runs)."""

    def kill(self) -> None: ...

    def stop(self) -> None: ...


class _Unit:
    """Supervision state of one child."""

    def __init__(self, child: Child, backoff: Backoff) -> None:
        self.child = child
        self.backoff = backoff
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.silent_since: float | None = None
        self.probed_at = 0.0
        self.loop_reported = False
        self.restarts = 0


class Supervisor:
    """Starts the children in order, keeps them running, stops them in reverse order."""

    def __init__(self, children: list[Child], out: TextIO, *,
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Callable[[], Backoff] = Backoff,
                 hung_after_s: float = HUNG_AFTER_S) -> None:
        self._units = [_Unit(child, backoff()) for child in children]
        for unit in self._units:  # a child started before the supervisor took it over
            unit.started_at = clock()
        self._out = out
        self._clock = clock
        self._hung_after_s = hung_after_s

    def restarts(self, name: str) -> int:
        """How many times the child called ``name`` was started again."""
        return next(unit.restarts for unit in self._units if unit.child.name == name)

    def start_all(self) -> None:
        for unit in self._units:
            self._start(unit)

    def stop_all(self) -> None:
        for unit in reversed(self._units):
            unit.child.stop()

    def tick(self) -> int | None:
        """Check every child once; the exit status ``make run`` must stop with, if any."""
        for unit in self._units:
            code = self._check(unit)
            if code is not None:
                return code
        return None

    def _check(self, unit: _Unit) -> int | None:
        child, now = unit.child, self._clock()
        if unit.restart_at is not None:
            if now >= unit.restart_at:
                unit.restarts += 1
                self._start(unit)
            return None
        if child.running():
            self._probe(unit, now)
            return None
        code = child.returncode()
        if code == EXIT_CONFIG:
            self._say(f"{child.name} exited with a configuration error (status 2); stopping.")
            for line in self._config_errors(child):
                self._say(f"  {child.name}: {line}")
            return EXIT_CONFIG
        self._schedule(unit, now, f"{child.name} exited ({code}) after "
                                  f"{now - unit.started_at:.1f} s")
        return None

    def _probe(self, unit: _Unit, now: float) -> None:
        if now - unit.probed_at < PROBE_EVERY_S:
            return
        unit.probed_at = now
        if unit.child.answering():
            unit.silent_since = None
            return
        if unit.silent_since is None:
            unit.silent_since = now
        elif now - unit.silent_since >= self._hung_after_s:
            self._say(f"{unit.child.name} running but not answering for "
                      f"{now - unit.silent_since:.0f} s; killing it")
            unit.child.kill()
            unit.silent_since = None

    def _start(self, unit: _Unit) -> None:
        unit.restart_at = None
        unit.silent_since = None
        unit.started_at = self._clock()
        try:
            unit.child.start()
        except Exception as exc:
            self._schedule(unit, self._clock(), f"{unit.child.name} did not start: {exc}")
            return
        verb = "restarted" if unit.restarts else "started"
        self._say(f"{unit.child.name} {verb} (pid {unit.child.pid})")

    def _schedule(self, unit: _Unit, now: float, what: str) -> None:
        delay = unit.backoff.failed(now - unit.started_at)
        unit.restart_at = now + delay
        self._say(f"{what}; restarting in {delay:.1f} s")
        if unit.child.log_file is not None:
            for line in log_tail(unit.child.log_file, TAIL_LINES):
                self._say(f"  | {line[:300]}")
        if unit.backoff.crash_looping and not unit.loop_reported:
            unit.loop_reported = True
            self._say(f"{unit.child.name} keeps crashing ({unit.backoff.failures} times in a "
                      f"row); retrying every {unit.backoff.cap_s:.0f} s at most; see "
                      f"{unit.child.log_file}")
        elif not unit.backoff.crash_looping:
            unit.loop_reported = False

    def _config_errors(self, child: Child) -> list[str]:
        if child.log_file is None:
            return []
        lines = log_tail(child.log_file, 50)
        found = [line[line.index(CONFIG_ERROR_MARK):] for line in lines
                 if CONFIG_ERROR_MARK in line]
        return found[-1:] or lines[-TAIL_LINES:]

    def _say(self, text: str) -> None:
        print(text, file=self._out, flush=True)
