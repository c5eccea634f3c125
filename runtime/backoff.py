"""Delays between retries of something that keeps failing: a watcher task, a crashed service.

Pure logic (no clock, no I/O), shared by ``runtime.tasks`` (restarting watchers inside a
service) and ``infra.supervisor`` (restarting service processes under ``make run``).
"""

from typing import Final

#: Consecutive quick failures after which a thing counts as crash-looping (reported once).
CRASH_LOOP_AFTER: Final = 5


class Backoff:
    """Exponential back-off with a cap, reset by a run that lasted ``reset_after_s``.

    ``failed(ran_for_s)`` records one failure after a run of ``ran_for_s`` seconds and returns
    how long to wait before the next try: ``initial_s``, then doubling per consecutive failure,
    never more than ``cap_s``. A run that lasted ``reset_after_s`` or longer was healthy, so
    the failure after it counts as the first again.
    """

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0, *,
                 factor: float = 2.0, reset_after_s: float = 30.0) -> None:
        if not 0 < initial_s <= cap_s or factor < 1 or reset_after_s <= 0:
            raise ValueError("need 0 < initial_s <= cap_s, factor >= 1, reset_after_s > 0")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.factor = factor
        self.reset_after_s = reset_after_s
        #: Failures in a row, each after a run shorter than ``reset_after_s``.
        self.failures = 0

    def failed(self, ran_for_s: float) -> float:
        """Record a failure after a run of ``ran_for_s`` seconds; the delay before retrying."""
        if ran_for_s >= self.reset_after_s:
            self.failures = 0
        self.failures += 1
        delay: float = min(self.cap_s, self.initial_s * self.factor ** (self.failures - 1))
        return delay

    @property
    def crash_looping(self) -> bool:
        """Whether the last ``CRASH_LOOP_AFTER`` failures came in a row, each run short."""
        return self.failures >= CRASH_LOOP_AFTER
