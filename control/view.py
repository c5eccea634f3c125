"""A local, watcher-fed copy of the control bucket: which devices, users, modules are disabled."""

import asyncio
from collections.abc import Callable

import msgspec
import structlog
from nats.aio.client import Client
from nats.js.kv import KeyValue

from runtime.kv import BucketFollower, ensure_bucket, follow_until_loaded
from runtime.tasks import TaskGroup
from schemas.control import CONTROL, ControlState, control_key, legacy_key

log = structlog.get_logger(__name__)

_decoder = msgspec.json.Decoder(ControlState)


class ControlChange(msgspec.Struct, frozen=True):
    """A target became disabled (``disabled``) or enabled again."""

    kind: str
    id: str
    app: str | None
    disabled: bool


ChangeListener = Callable[[ControlChange], None]


class ControlView:
    """Answers "is this disabled?" from memory; listeners hear of every change."""

    def __init__(self, nc: Client, *, replicas: int) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._replicas = replicas
        self._states: dict[str, ControlState] = {}
        self._listeners: list[ChangeListener] = []
        self._tasks = TaskGroup("control-view")
        self._ready = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Event]] = {}

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Follow the bucket (a watcher restarted when it fails or NATS reconnects, which
        replays the current values and drops keys that vanished meanwhile); return once the
        current state is loaded."""
        follower = BucketFollower(self._nc, self._open_bucket, self._apply,
                                  lambda: list(self._states), self._ready.set)
        await follow_until_loaded(self._tasks, {"watch": follower}, (self._ready,),
                                  backoff=(0.5, 5.0))

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _open_bucket(self) -> KeyValue:
        return await ensure_bucket(self._js, CONTROL, self._replicas)

    def device_disabled(self, app: str, device: str) -> bool:
        return control_key("device", device, app) in self._states

    def user_disabled(self, app: str, user: str) -> bool:
        return control_key("user", user, app) in self._states

    def module_disabled(self, app: str, module: str) -> bool:
        return control_key("module", module, app) in self._states

    def blocks(self, app: str, user: str, device: str) -> bool:
        """Whether nothing may reach or come from this device of ``app`` (it or its user is
        disabled)."""
        return self.user_disabled(app, user) or self.device_disabled(app, device)

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
        if legacy_key(key):  # rewritten with its app by a gateway (ControlAdmin.migrate)
            return
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
