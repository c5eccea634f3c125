"""Collapsing bursts: the jobs of one (app, device, conversation) that arrive within a window of the
first become one burst, flushed once as one wake-up. Pure bookkeeping with times passed in;
``H`` is whatever handle the caller acknowledges jobs with (a JetStream message)."""

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from schemas.push import PushJob, WakeUpConversation

H = TypeVar("H")
BurstKey = tuple[str, str, str]  # (app, device, conversation): device ids are per app


@dataclass
class Burst(Generic[H]):
    """Jobs waiting to become one push. ``touched``: when the handles' ack deadline was last
    extended (or the first job arrived)."""

    key: BurstKey
    due: float
    touched: float
    jobs: list[PushJob] = field(default_factory=list)
    handles: list[H] = field(default_factory=list)

    @property
    def app(self) -> str:
        return self.key[0]

    @property
    def device(self) -> str:
        return self.key[1]

    @property
    def user(self) -> str:
        return self.jobs[-1].user


class Coalescer(Generic[H]):
    """Pending bursts by key, ordered by due time."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._bursts: dict[BurstKey, Burst[H]] = {}
        self._heap: list[tuple[float, int, BurstKey]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._bursts)

    def add(self, job: PushJob, handle: H, now: float) -> None:
        """Join the pending burst of the job's key, or open one due ``window_s`` from now."""
        key = (job.app, job.device, job.conversation)
        burst = self._bursts.get(key)
        if burst is None:
            burst = self._bursts[key] = Burst(key=key, due=now + self._window_s, touched=now)
            self._push(burst)
        burst.jobs.append(job)
        burst.handles.append(handle)

    def requeue(self, burst: Burst[H], due: float) -> None:
        """Put a popped burst back, due at ``due``; a burst opened for its key meanwhile is
        merged into it (its jobs are newer)."""
        pending = self._bursts.get(burst.key)
        if pending is not None:
            burst.jobs.extend(pending.jobs)
            burst.handles.extend(pending.handles)
            burst.touched = min(burst.touched, pending.touched)
        burst.due = due
        self._bursts[burst.key] = burst
        self._push(burst)

    def pop_due(self, now: float) -> list[Burst[H]]:
        """Remove and return the bursts due at ``now``, earliest first."""
        due: list[Burst[H]] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            burst = self._bursts.get(key)
            if burst is not None and burst.due == when:
                del self._bursts[key]
                due.append(burst)
        return due

    def pop_all(self) -> list[Burst[H]]:
        """Remove and return every pending burst (shutdown)."""
        bursts = sorted(self._bursts.values(), key=lambda b: b.due)
        self._bursts.clear()
        self._heap.clear()
        return bursts

    def next_due(self) -> float | None:
        """When the earliest pending burst is due (None: nothing pending)."""
        while self._heap:
            when, _, key = self._heap[0]
            burst = self._bursts.get(key)
            if burst is not None and burst.due == when:
                return when
            heapq.heappop(self._heap)  # superseded entry
        return None

    def stale(self, now: float, age_s: float) -> list[Burst[H]]:
        """Bursts held ``age_s`` or longer since last touched; they count as touched now."""
        found = [b for b in self._bursts.values() if now - b.touched >= age_s]
        for burst in found:
            burst.touched = now
        return found

    def _push(self, burst: Burst[H]) -> None:
        heapq.heappush(self._heap, (burst.due, next(self._order), burst.key))


def summarize(jobs: list[PushJob], max_ids: int) -> WakeUpConversation:
    """What the wake-up of a burst stands for: its conversation, how many distinct messages,
    the newest ids, the last seq (kept for the device, never sent to the push service)."""
    newest: dict[str, PushJob] = {}
    for job in sorted(jobs, key=lambda j: j.seq):
        newest.pop(job.message_id, None)
        newest[job.message_id] = job
    ordered = list(newest.values())
    last = ordered[-1]
    return WakeUpConversation(conversation=last.conversation, kind=last.kind,
                              count=len(ordered), seq=last.seq,
                              message_ids=[j.message_id for j in ordered[-max_ids:]])
