"""Export JSON Schema for every frame, envelope, RPC and REST body.

``python -m schemas.export docs/schema`` writes one file per group; a test fails when the
committed files and the types drift apart (run ``make schemas`` after changing a type).
"""

import sys
from pathlib import Path
from typing import Any

import msgspec

from schemas import (
    archive,
    callbacks,
    contacts,
    control,
    dead_letters,
    edge,
    frames,
    groups,
    keys,
    media,
    notifications,
    presence,
    push,
    rest,
    rpc,
)
from schemas.envelopes import Envelope

GROUPS: dict[str, list[Any]] = {
    "client-frames": [frames.ClientFrame],
    "server-frames": [frames.ServerFrame],
    "envelopes": [Envelope],
    "edge": [edge.EdgeBatch, edge.UserFrames],
    "rest": [rest.Problem, rest.Health, rest.DevDeviceRequest, rest.DevDeviceResponse,
             rest.ConnectReply, rest.BalancerHealth],
    "presence": [presence.GatewayBeat, presence.DrainStarted],
    "rpc": [rpc.RegisterDevice, rpc.GetUser, rpc.DeviceOwner, rpc.SyncRequest,
            rpc.HistoryRequest, rpc.MessageRequest, rpc.ConversationsRequest, rpc.DeviceInfo,
            rpc.UserDevices, rpc.Owner, rpc.SyncPage, rpc.HistoryPage, rpc.Conversations,
            rpc.Failed],
    "push": [push.PushRegistrationRequest, push.PushRegistration, push.PushJob, push.WakeUp,
             push.WakeUpDetails, push.WakeUpRecord, push.DeadPush],
    "notifications": [notifications.NotifyRequest, notifications.NotifyResult,
                      notifications.AppUsersRequest, notifications.AppUsers],
    "control": [control.ControlRequest, control.ControlResult, control.ControlState,
                control.ControlList, control.AuditRecord, control.AuditPage],
    "callbacks": [callbacks.CallbackEnvelope],
    "dead-letters": [dead_letters.DeadLetterPage, dead_letters.DeadLetterDetail,
                     dead_letters.ReplayResult],
    "groups": [groups.GroupEvent, groups.CreateGroupRequest, groups.RenameGroupRequest,
               groups.AddMembersRequest, groups.SetRoleRequest, groups.GroupInfo,
               groups.GroupList, groups.GroupReceipts, groups.GroupWrite, groups.GroupGet,
               groups.UserGroups, groups.GroupRosterRequest, groups.GroupRoster,
               groups.GroupMembersAt, groups.GroupMembers, groups.GroupEventRequest,
               groups.GroupEventOutcome, groups.GroupReceiptsRequest],
    "contacts": [contacts.ContactRequestBody, contacts.ContactEntry, contacts.ContactList,
                 contacts.PresenceList, contacts.ContactWrite, contacts.ContactWriteResult,
                 contacts.ContactsOf, contacts.RelationsRequest, contacts.Relations,
                 contacts.RelationChanged],
    "media": [media.UploadRequest, media.UploadSlot, media.CompleteUpload, media.UploadComplete,
              media.DownloadGrant, media.BlobRecord],
    "keys": [keys.KeysUpload, keys.KeysUploadResult, keys.KeysQuery, keys.KeysQueryResult,
             keys.KeysClaim, keys.KeysClaimResult, keys.DeviceList, keys.KeysUploadRequest,
             keys.KeysQueryRequest, keys.KeysClaimRequest, keys.KeysClaimOutcome,
             keys.KeysRemoveRequest, keys.KeysRemoved, keys.KeysUploadOutcome,
             keys.KeyAudienceRequest, keys.KeyAudience],
    "archive": [archive.ArchiveRunRequest, archive.ArchiveReport],
}


def render(kinds: list[Any]) -> bytes:
    """Deterministic, pretty JSON Schema: any of ``kinds``, definitions under ``$defs``."""
    schemas, components = msgspec.json.schema_components(kinds, ref_template="#/$defs/{name}")
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "anyOf": list(schemas) if len(schemas) > 1 else None,
        "$defs": components,
    }
    if len(schemas) == 1:
        document.pop("anyOf")
        document.update(schemas[0])
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, kind in GROUPS.items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(render(kind))
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schema")
    for path in export(target):
        print(path)
