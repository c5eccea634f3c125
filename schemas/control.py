"""System control: disabling and re-enabling devices, users and modules, and the audit trail.

An administrator applies a ``ControlRequest`` with ``POST /v1/admin/control`` (admin
credential) or on the NATS subject ``control.apply`` (request/reply, JSON, queue group
``control``). The current state lives in the KV bucket ``courier_control``: a key per disabled
target (``device.<app>.<id>``, ``user.<app>.<id>``, ``module.<app>.<id>``: ids are per app)
holding a ``ControlState``;
enabling deletes the key. Gateways and routers watch the bucket: gateways close the affected
sockets with close code 4103 and refuse them until re-enabled; routers stop delivering to them.
Every applied request is first recorded as an ``AuditRecord`` on ``audit.control`` (stream
``AUDIT``), readable with ``GET /v1/admin/audit``.
"""

from typing import Annotated, Final, Literal

import msgspec

from schemas.buckets import BucketSpec
from schemas.ids import AppId
from schemas.streams import StreamSpec

#: Request/reply subject of control actions (JSON).
CONTROL_APPLY: Final = "control.apply"
#: Queue group of the gateways serving ``control.apply``.
CONTROL_QUEUE: Final = "control"
AUDIT_STREAM: Final = "AUDIT"
#: Where every control action is recorded.
AUDIT_CONTROL: Final = "audit.control"

AUDIT: Final = StreamSpec(
    name=AUDIT_STREAM,
    subjects=("audit.>",),
    description="Audit trail of administrative actions (who, what, when).",
)

CONTROL: Final = BucketSpec(
    name="courier_control",
    description="Disabled devices, users and modules: key -> ControlState (JSON).",
)

TargetKind = Literal["device", "user", "module"]
Action = Literal["disable", "enable"]


class ControlTarget(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What an action applies to, in ``app`` (the deployment's default app when omitted):
    device, user and module ids are per app."""

    kind: TargetKind
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
    app: AppId | None = None


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Disable or enable a target. ``actor`` names the administrator (recorded in the audit)."""

    action: Action
    target: ControlTarget
    actor: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""


class ControlState(msgspec.Struct, omit_defaults=True):
    """A disabled target (the value of its key in ``courier_control``)."""

    kind: TargetKind
    id: str
    disabled_at: int
    by: str
    reason: str = ""
    app: str | None = None


class AuditRecord(msgspec.Struct, omit_defaults=True):
    """One control action as it was applied: who, what, when, through which entry point, and
    whether it changed the state (disabling a disabled target changes nothing)."""

    action: Action
    target: ControlTarget
    actor: str
    via: Literal["rest", "nats"]
    ts: int
    changed: bool
    gateway: str
    reason: str = ""


class ControlResult(msgspec.Struct):
    """Reply to a ``ControlRequest``: ``audit_seq`` is the audit record's position."""

    action: Action
    target: ControlTarget
    changed: bool
    audit_seq: int
    ts: int


class ControlList(msgspec.Struct):
    """``GET /v1/admin/control``: every disabled target."""

    disabled: list[ControlState]


class AuditEntry(msgspec.Struct):
    """An audit record and its position in the ``AUDIT`` stream."""

    seq: int
    record: AuditRecord


class AuditPage(msgspec.Struct):
    """``GET /v1/admin/audit``: records in order; ``next_after`` continues (None: no more)."""

    entries: list[AuditEntry]
    next_after: int | None


def control_key(kind: str, target_id: str, app: str) -> str:
    """The KV key of a target (ids are subject-safe, so they are valid key tokens)."""
    return f"{kind}.{app}.{target_id}"


def legacy_key(key: str) -> bool:
    """A device or user key written before keys carried the app (``device.<id>``): it
    belongs to the default app, and gateways rewrite it (``ControlAdmin.migrate``)."""
    return key.count(".") == 1
