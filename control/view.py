"""A local, watcher-fed copy of the control bucket: which devices, users, modules are disabled."""

import asyncio
from collections.abc import Callable

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from runtime.kv import ensure_bucket
from schemas.control import CONTROL, ControlState, control_key

log = structlog.get_logger(__name__)

_decoder = msgspec.json.Decoder(ControlState)
READY_TIMEOUT_S = 10.0
RETRY_S = 0.5


class ControlChange(msgspec.Struct, frozen=True):
    """A target became disabled (``disabled``) or enabled again."""

    kind: str
    id: str
    app: str | None
    disabled: bool


ChangeListener = Callable[[ControlChange], None]


class ControlView:
    """Answers "is this disabled?" from memory; listeners hear of every change."""

    def __init__(self, js: JetStreamContext, *, replicas: int) -> None:
        self._js = js
        self._replicas = replicas
        self._states: dict[str, ControlState] = {}
        self._listeners: list[ChangeListener] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Event]] = {}

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Open the bucket and return once the current state is loaded."""
        kv = await ensure_bucket(self._js, CONTROL, self._replicas)
        self._task = asyncio.create_task(self._watch_forever(kv), name="control-watch")
        async with asyncio.timeout(READY_TIMEOUT_S):
            await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def device_disabled(self, device: str) -> bool:
        return control_key("device", device, None) in self._states

    def user_disabled(self, user: str) -> bool:
        return control_key("user", user, None) in self._states

    def module_disabled(self, app: str, module: str) -> bool:
        return control_key("module", module, app) in self._states

    def blocks(self, user: str, device: str) -> bool:
        """Whether nothing may reach or come from this device (it or its user is disabled)."""
        return self.user_disabled(user) or self.device_disabled(device)

    async def reflects(self, key: str, disabled: bool, within_s: float) -> bool:
        """Wait until this view shows ``key`` disabled (or enabled): an administrator's write
        is applied here before it is acknowledged. False if it did not arrive in time."""
        while (key in self._states) != disabled:
            event = asyncio.Event()
            self._waiters.setdefault(key, []).append(event)
            try:
                async with asyncio.timeout(within_s):
                    await event.wait()
            except TimeoutError:
                return False
            finally:
                waiters = self._waiters.get(key, [])
                if event in waiters:
                    waiters.remove(event)
                if not waiters:
                    self._waiters.pop(key, None)
        return True

    def states(self) -> list[ControlState]:
        """Every disabled target, oldest first."""
        return sorted(self._states.values(), key=lambda s: (s.disabled_at, s.kind, s.id))

    def _apply(self, key: str, value: bytes | None) -> None:
        for event in self._waiters.get(key, []):
            event.set()
        previous = self._states.pop(key, None)
        if value is None:
            if previous is not None:
                self._notify(ControlChange(kind=previous.kind, id=previous.id,
                                           app=previous.app, disabled=False))
            return
        try:
            state = _decoder.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("control_entry_invalid", key=key, error=str(exc))
            return
        self._states[key] = state
        if previous is None:
            self._notify(ControlChange(kind=state.kind, id=state.id, app=state.app,
                                       disabled=True))

    def _notify(self, change: ControlChange) -> None:
        for listener in self._listeners:
            listener(change)

    async def _watch_forever(self, kv: KeyValue) -> None:
        """Follow the bucket; when the watcher fails (NATS trouble), start a new one, which
        replays the current values, and drop keys that vanished meanwhile."""
        while True:
            try:
                await self._watch(kv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("control_watch_failed", error=repr(exc))
                await asyncio.sleep(RETRY_S)

    async def _watch(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        seen: set[str] | None = set()
        async for entry in watcher:
            if entry is None:  # initial values delivered
                for key in set(self._states) - (seen or set()):
                    self._apply(key, None)
                seen = None
                self._ready.set()
                continue
            deleted = entry.operation is not None or not entry.value
            if seen is not None and not deleted:
                seen.add(entry.key)
            self._apply(entry.key, None if deleted else entry.value)
