"""The route table: every HTTP route the gateway serves, declared once (``gateway.http.routing``
says what a declaration holds and checks). ``gateway.service`` serves it, ``gateway.http.openapi``
documents it, and the tests walk it: the disabled guard and the limits hold on every device
route because the table's wrapper applies them, not the handlers.

Modules of device routes (what an administrator disables with ``target.kind: module``):
``chat`` conversations, history, messages and their receipts; ``groups``; ``contacts``
(contacts and blocks); ``presence``; ``push`` (push registration and wake-ups); ``media``
(upload slots, multipart completions and download grants; docs/media.md); ``keys`` (the
end-to-end encryption key directory; docs/e2ee.md).
"""

from typing import Any, Final

from gateway.http.admin_rest import (
    AUDIT_AFTER,
    AUDIT_LIMIT,
    DEAD_LETTERS_AFTER,
    DEAD_LETTERS_LIMIT,
    SEQ,
    AdminApi,
)
from gateway.http.archive_rest import ArchiveApi
from gateway.http.drain_rest import GATEWAY, DrainApi
from gateway.http.keys_rest import DEVICE, KeysRest
from gateway.http.media_rest import (
    APP,
    BLOB,
    EXPIRES,
    MAX_COMPLETE_BODY,
    PART,
    SIG,
    SIZE,
    TYPE,
    UPLOAD,
    LocalBlobRoutes,
    MediaApi,
)
from gateway.http.media_rest import MAX_BODY as MEDIA_MAX_BODY
from gateway.http.notify_rest import NotifyApi
from gateway.http.openapi import ApiDocs
from gateway.http.push_rest import WAKEUP, PushRegistrationApi
from gateway.http.rest import AFTER, BEFORE, CONVERSATION, LIMIT, MESSAGE_ID, RestApi
from gateway.http.routing import IdParam, Reply, Route
from gateway.http.social_rest import GROUP, MAX_BODY, USER, USERS, SocialRest
from gateway.http.upgrade import SocketEndpoint
from runtime.config import Config
from schemas import rpc
from schemas.archive import ArchiveReport, ArchiveRunRequest
from schemas.contacts import ContactEntry, ContactList, ContactRequestBody, PresenceList
from schemas.control import AuditPage, ControlList, ControlRequest, ControlResult
from schemas.dead_letters import DeadLetterDetail, DeadLetterPage, ReplayResult
from schemas.groups import (
    AddMembersRequest,
    CreateGroupRequest,
    GroupInfo,
    GroupList,
    GroupReceipts,
    RenameGroupRequest,
    SetRoleRequest,
)
from schemas.keys import (
    DeviceList,
    KeysClaim,
    KeysClaimResult,
    KeysQuery,
    KeysQueryResult,
    KeysUpload,
    KeysUploadResult,
)
from schemas.media import (
    CompleteUpload,
    DownloadGrant,
    UploadComplete,
    UploadRequest,
    UploadSlot,
)
from schemas.notifications import NotifyRequest, NotifyResult
from schemas.presence import DrainStarted
from schemas.push import PushRegistration, PushRegistrationRequest, WakeUpDetails
from schemas.rest import DevDeviceRequest, DevDeviceResponse, Health

#: The one dependency every device route and most others have (storage, KV, NATS).
UNAVAILABLE: Final = 503
GROUP_WRITE: Final = (404, 409, UNAVAILABLE)


def ok(body: Any, description: str, status: int = 200) -> tuple[Reply]:
    return (Reply(status, description, body),)


def _notify_limit(config: Config) -> int:
    return config.notify.max_request_bytes


def _group(method: Any, path: str, handler: Any, summary: str, reply: Any, ok_text: str,
           **extra: Any) -> Route:
    """A route of the ``groups`` module."""
    bucket = extra.pop("bucket", "read" if method == "GET" else "write")
    return Route(method=method, path=path, handler=handler, credential="device",
                 module="groups", bucket=bucket,
                 summary=summary, replies=ok(reply, ok_text, extra.pop("status", 200)),
                 body_limit=MAX_BODY, **extra)


def _contact(method: Any, path: str, handler: Any, summary: str, ok_text: str,
             **extra: Any) -> Route:
    """A contact or block write (``contacts`` module) about the user in the path."""
    return Route(method=method, path=path, handler=handler, credential="device",
                 module="contacts", bucket="write", summary=summary,
                 replies=ok(ContactEntry, ok_text), params=(USER,), problems=(404, UNAVAILABLE),
                 **extra)


ROUTES: Final[tuple[Route, ...]] = (
    # ------------------------------------------------------------ open
    Route(method="GET", path="/healthz", handler=RestApi.healthz, credential="none",
          summary="Liveness and NATS connectivity",
          replies=(Reply(200, "Healthy", Health), Reply(503, "NATS unreachable", Health))),
    Route(method="GET", path="/metrics", handler=RestApi.metrics, credential="none",
          summary="Prometheus metrics",
          replies=(Reply(200, "Text exposition", str, media="text/plain"),)),
    Route(method="GET", path="/openapi.json", handler=ApiDocs.document, credential="none",
          summary="This document", replies=ok(dict[str, Any], "OpenAPI 3.1")),
    Route(method="GET", path="/v1/ws", handler=SocketEndpoint.handle, credential="none",
          summary="WebSocket upgrade (protocol v1, see docs/protocol.md)",
          description="Token in `Authorization: Bearer` or the `token` query. The socket "
                      "endpoint checks the token, the disabled guard (403 `disabled`) and "
                      "the upgrade and connection limits (429) itself, before upgrading.",
          params=(IdParam("token", "The device token, if not in `Authorization`",
                          pattern=r"^[A-Za-z0-9_\-.]+$"),
                  IdParam("protocol", "The protocol version spoken (1)", pattern="^1$")),
          replies=(Reply(101, "Switching protocols"),),
          problems=(400, 401, 403, 429, UNAVAILABLE), upgrade=True),
    Route(method="POST", path="/v1/dev/devices", handler=RestApi.dev_register,
          credential="none", bucket="registration",
          summary="Register a device and get its token (embedded mode only)",
          description="404 where `COURIER_AUTH_DEV_REGISTRATION` is off; 409 when the device "
                      "id is registered to another user.",
          body=DevDeviceRequest, replies=ok(DevDeviceResponse, "Registered", 201),
          problems=(404, 409, UNAVAILABLE)),
    # ------------------------------------------------------------ chat
    Route(method="GET", path="/v1/conversations", handler=RestApi.conversations,
          credential="device", module="chat", bucket="read",
          summary="My conversations, most recent first, with unread counts",
          params=(LIMIT,), replies=ok(rpc.Conversations, "Conversations"),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/conversations/{conversation}/messages",
          handler=RestApi.history, credential="device", module="chat", bucket="read",
          summary="Page a conversation's messages (members only)",
          description="Without cursor: the newest page. `before=S`: the page before seq S "
                      "(use `next_before`); `after=S`: the page after seq S (use "
                      "`next_after`); not both. Items are in ascending seq order.",
          params=(CONVERSATION, BEFORE, AFTER, LIMIT), replies=ok(rpc.HistoryPage, "A page"),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/messages/{message_id}", handler=RestApi.message,
          credential="device", module="chat", bucket="read",
          summary="One message by its server id (its recipients only)",
          description="The message as this device sees it in history, with its status. 404 "
                      "when it does not exist and when the caller's user was not a recipient "
                      "(a member of its conversation at its seq), so its existence does not "
                      "leak.",
          params=(MESSAGE_ID,), replies=ok(rpc.HistoryItem, "The message"),
          problems=(404, UNAVAILABLE)),
    Route(method="GET", path="/v1/conversations/{conversation}/messages/{message_id}/receipts",
          handler=SocialRest.receipts, credential="device", module="chat", bucket="read",
          summary="Receipt counters of a group message (members who received it)",
          description="`delivered`: recipients one of whose devices acknowledged it (or who "
                      "read up to it); `read`: recipients whose read marker reached it. "
                      "Recipients are the members at the message's seq but its sender.",
          params=(CONVERSATION, MESSAGE_ID), replies=ok(GroupReceipts, "Counters"),
          problems=(404, UNAVAILABLE)),
    # ------------------------------------------------------------ push
    Route(method="PUT", path="/v1/devices/me/push", handler=PushRegistrationApi.put,
          credential="device", module="push", bucket="write",
          summary="Register (or rotate) this device's push token",
          body=PushRegistrationRequest, replies=ok(PushRegistration, "Registered"),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/devices/me/push", handler=PushRegistrationApi.get,
          credential="device", module="push", bucket="read",
          summary="This device's push registration (disabled if a provider rejected the "
                  "token)",
          replies=ok(PushRegistration, "Registration"), problems=(404, UNAVAILABLE)),
    Route(method="DELETE", path="/v1/devices/me/push", handler=PushRegistrationApi.delete,
          credential="device", module="push", bucket="write",
          summary="Remove this device's push registration", replies=ok(None, "Removed", 204),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/devices/me/push/wakeups/{wakeup}",
          handler=PushRegistrationApi.wakeup, credential="device", module="push",
          bucket="read", summary="What a wake-up this device received stands for",
          description="A wake-up carries only an opaque `id` and a `count`; this trades the id "
                      "for the conversations and message ids it concerns. Only the device it "
                      "woke may read it, for a day; anyone else, an unknown or an expired id "
                      "get the same 404.",
          params=(WAKEUP,), replies=ok(WakeUpDetails, "What the wake-up stands for"),
          problems=(404, UNAVAILABLE)),
    # ------------------------------------------------------------ keys
    Route(method="PUT", path="/v1/keys", handler=KeysRest.upload, credential="device",
          module="keys", bucket="write",
          summary="Publish this device's identity keys, one-time keys and fallback key",
          description="The first upload of a device carries `device_keys`; later ones the "
                      "same keys or none. Each key is signed by the device's Ed25519 key "
                      "(docs/e2ee.md); a bad signature is 422 `invalid`, other identity keys "
                      "for a device that has some are 409 `conflict`.",
          body=KeysUpload, body_limit=MAX_BODY, replies=ok(KeysUploadResult, "Stored"),
          problems=(409, UNAVAILABLE)),
    Route(method="POST", path="/v1/keys/query", handler=KeysRest.query, credential="device",
          module="keys", bucket="write",
          summary="The devices of these users and their signed identity keys",
          body=KeysQuery, replies=ok(KeysQueryResult, "Devices"), problems=(UNAVAILABLE,)),
    Route(method="POST", path="/v1/keys/claim", handler=KeysRest.claim, credential="device",
          module="keys", bucket="write",
          summary="Take one one-time key of each of these devices (never handed out twice)",
          description="A device without one-time keys left gives its fallback key (flagged "
                      "`fallback`); one without either is listed in `missing`.",
          body=KeysClaim, replies=ok(KeysClaimResult, "Claimed keys"),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/devices", handler=KeysRest.devices, credential="device",
          module="keys", bucket="read",
          summary="My devices that published identity keys",
          replies=ok(DeviceList, "Devices"), problems=(UNAVAILABLE,)),
    Route(method="DELETE", path="/v1/devices/{device}", handler=KeysRest.remove_device,
          credential="device", module="keys", bucket="write",
          summary="Remove one of my devices (a lost one, or this one)",
          description="Its keys leave the directory, its token is refused from then on and its "
                      "sockets close with `disabled` (4103); audited as a control action with "
                      "actor `user:<me>`. 404 when the caller has no such device.",
          params=(DEVICE,), replies=ok(None, "Removed", 204), problems=(404, UNAVAILABLE)),
    # ------------------------------------------------------------ groups
    _group("POST", "/v1/groups", SocialRest.create_group,
           "Create a group; the caller becomes its owner", GroupInfo, "Created", status=201,
           bucket="group_create", body=CreateGroupRequest, problems=GROUP_WRITE,
           description="Without `id` the server picks one. Members must be registered users "
                       "(404 otherwise); at most `groups.max_members` members, owner included "
                       "(422)."),
    _group("GET", "/v1/groups", SocialRest.my_groups, "My groups, most recently changed first",
           GroupList, "Groups", problems=(UNAVAILABLE,)),
    _group("GET", "/v1/groups/{group}", SocialRest.get_group,
           "A group and its members (members only)", GroupInfo, "Group", params=(GROUP,),
           problems=(404, UNAVAILABLE)),
    _group("PATCH", "/v1/groups/{group}", SocialRest.rename_group,
           "Rename a group (owner, admins)", GroupInfo, "Renamed", body=RenameGroupRequest,
           params=(GROUP,), problems=GROUP_WRITE),
    _group("POST", "/v1/groups/{group}/members", SocialRest.add_members,
           "Add members (owner, admins)", GroupInfo, "Added", body=AddMembersRequest,
           params=(GROUP,), problems=GROUP_WRITE,
           description="New members see the group's messages from the system message that "
                       "adds them on, not before. 409 when the group would exceed "
                       "`groups.max_members` or every user is already a member."),
    _group("DELETE", "/v1/groups/{group}/members/{user}", SocialRest.remove_member,
           "Remove a member (owner: anyone but itself; admins: plain members)", GroupInfo,
           "Removed", params=(GROUP, USER), problems=GROUP_WRITE,
           description="The removed member gets the system message of its removal and no "
                       "message after it; what it received before stays in its history."),
    _group("PUT", "/v1/groups/{group}/members/{user}/role", SocialRest.set_role,
           "Change a member's role (owner only)", GroupInfo, "Changed", body=SetRoleRequest,
           params=(GROUP, USER), problems=GROUP_WRITE,
           description="Role `owner` hands ownership over; the previous owner becomes an "
                       "admin."),
    _group("POST", "/v1/groups/{group}/leave", SocialRest.leave_group, "Leave a group",
           GroupInfo, "Left (the group as it was left)", params=(GROUP,), problems=GROUP_WRITE,
           description="An owner's ownership passes to the longest-standing admin, else "
                       "member."),
    # ------------------------------------------------------------ contacts
    Route(method="GET", path="/v1/contacts", handler=SocialRest.contacts, credential="device",
          module="contacts", bucket="read",
          summary="My contacts, pending requests (incoming, outgoing) and blocked users",
          replies=ok(ContactList, "Contacts"), problems=(UNAVAILABLE,)),
    Route(method="POST", path="/v1/contacts/requests", handler=SocialRest.request_contact,
          credential="device", module="contacts", bucket="contact_request",
          summary="Ask a user to become a contact", body=ContactRequestBody,
          replies=ok(ContactEntry, "The relation now (`outgoing`, or `contact` if they had "
                                   "asked too)"),
          problems=(404, 409, UNAVAILABLE)),
    _contact("POST", "/v1/contacts/requests/{user}/accept", SocialRest.accept,
             "Accept a contact request", "Now contacts"),
    _contact("POST", "/v1/contacts/requests/{user}/decline", SocialRest.decline,
             "Decline a contact request", "Declined"),
    _contact("DELETE", "/v1/contacts/requests/{user}", SocialRest.cancel,
             "Cancel my contact request", "Cancelled"),
    _contact("DELETE", "/v1/contacts/{user}", SocialRest.remove_contact,
             "Remove a contact (both sides)", "Removed"),
    _contact("PUT", "/v1/blocks/{user}", SocialRest.block,
             "Block a user: it can no longer message me, send me requests or see my presence; "
             "any contact or request between us ends", "Blocked"),
    _contact("DELETE", "/v1/blocks/{user}", SocialRest.unblock, "Unblock a user",
             "Unblocked"),
    # ------------------------------------------------------------ presence
    Route(method="GET", path="/v1/presence", handler=SocialRest.presence, credential="device",
          module="presence", bucket="read",
          summary="Presence of users I may see (contacts who do not block me)",
          params=(USERS,), replies=ok(PresenceList, "Presence"), problems=(UNAVAILABLE,)),
    # ------------------------------------------------------------ media
    Route(method="POST", path="/v1/media/uploads", handler=MediaApi.upload, credential="device",
          module="media", bucket="write",
          summary="Get an upload slot for an (encrypted) attachment",
          description="The caller must be able to write to `conversation`. 413 past the app's "
                      "`media.max_bytes`; 422 for a content type `media.content_types` does "
                      "not allow; 409 when the user's `media.user_quota_bytes` would be "
                      "exceeded. Upload with the slot's method, URL and headers, a body of "
                      "exactly `size` bytes, before `expires_at`: the storage refuses anything "
                      "else (403). A blob no send references within "
                      "`media.unreferenced_ttl_s` is deleted. A size over "
                      "`media.part_bytes` gets a multipart slot: `parts` lists one URL per "
                      "part, each signed with its size; then complete the upload.",
          body=UploadRequest, body_limit=MEDIA_MAX_BODY, replies=ok(UploadSlot, "A slot", 201),
          problems=(403, 409, 413, UNAVAILABLE)),
    Route(method="POST", path="/v1/media/uploads/{blob}/complete", handler=MediaApi.complete,
          credential="device", module="media", bucket="write",
          summary="Complete a multipart upload with the ETags of its parts",
          description="List every part of the slot, 1 to the last, in order, with the ETag "
                      "its upload returned: 422 otherwise, and when the storage refuses the "
                      "parts (one missing, an ETag that does not match). 409 for a single "
                      "upload's blob; 404 for anyone but the owner and an expired or aborted "
                      "blob. Completing again succeeds.",
          params=(BLOB,), body=CompleteUpload, body_limit=MAX_COMPLETE_BODY,
          replies=ok(UploadComplete, "Stored"), problems=(404, 409, UNAVAILABLE)),
    Route(method="DELETE", path="/v1/media/uploads/{blob}", handler=MediaApi.abort,
          credential="device", module="media", bucket="write",
          summary="Give up an upload (a multipart upload is aborted)",
          description="The blob expires now: the sweeper deletes what was stored and gives "
                      "its bytes back to the quota. 409 once a send referenced it; 404 for "
                      "anyone but the owner and an expired blob.",
          params=(BLOB,), replies=ok(None, "Given up", 204), problems=(404, 409, UNAVAILABLE)),
    Route(method="GET", path="/v1/media/{blob}/download", handler=MediaApi.download,
          credential="device", module="media", bucket="read",
          summary="A short-lived download URL of a blob (its owner and the members of a "
                  "conversation it was sent in)",
          description="The URL answers `Range` requests. For anyone else, and for an unknown "
                      "or expired blob, the same 404.",
          params=(BLOB,), replies=ok(DownloadGrant, "A download URL"),
          problems=(404, UNAVAILABLE)),
    Route(method="PUT", path="/v1/media/local/{app}/{blob}", handler=LocalBlobRoutes.put,
          credential="none",
          summary="Upload to the local blob store through a signed URL (embedded mode)",
          description="The URL from an upload slot; the body must have the signed size and "
                      "`Content-Type`. 403 for a changed or expired URL; 404 where blobs are "
                      "on S3.",
          params=(APP, BLOB, EXPIRES, SIZE, TYPE, SIG), replies=ok(None, "Stored", 204),
          problems=(403, 404, 413)),
    Route(method="PUT", path="/v1/media/local/{app}/{blob}/parts/{part}",
          handler=LocalBlobRoutes.put_part, credential="none",
          summary="Upload a part of a multipart upload to the local blob store (embedded "
                  "mode)",
          description="The URL from a multipart slot's part; the body must have the signed "
                      "size. The `ETag` header of the answer names the part for the "
                      "completion. 403 for a changed or expired URL; 404 for an upload "
                      "aborted or completed, and where blobs are on S3.",
          params=(APP, BLOB, PART, UPLOAD, EXPIRES, SIZE, SIG), replies=ok(None, "Stored"),
          problems=(403, 404, 413)),
    Route(method="GET", path="/v1/media/local/{app}/{blob}", handler=LocalBlobRoutes.get,
          credential="none",
          summary="Download from the local blob store through a signed URL (embedded mode)",
          description="The URL from a download grant; `Range` requests are answered with 206. "
                      "403 for a changed or expired URL; 404 for a missing blob or where "
                      "blobs are on S3.",
          params=(APP, BLOB, EXPIRES, SIG),
          replies=(Reply(200, "The blob's bytes", bytes, media="application/octet-stream"),),
          problems=(403, 404)),
    # ------------------------------------------------------------ service
    Route(method="POST", path="/v1/notifications", handler=NotifyApi.send,
          credential="service",
          summary="Send a batch of business notifications (one result per item)",
          description="The same body as the NATS subject notify.send. Items fail one by one "
                      "(unknown_recipient, too_large, disabled, unavailable); a malformed or "
                      "oversized batch fails as a whole.",
          body=NotifyRequest, body_limit=_notify_limit, replies=ok(NotifyResult, "Results"),
          problems=(UNAVAILABLE,)),
    # ------------------------------------------------------------ admin
    Route(method="POST", path="/v1/admin/control", handler=AdminApi.apply, credential="admin",
          summary="Disable or enable a device, user or module (audited)",
          body=ControlRequest, replies=ok(ControlResult, "Applied"),
          problems=(404, UNAVAILABLE)),
    Route(method="GET", path="/v1/admin/control", handler=AdminApi.disabled,
          credential="admin", summary="Every disabled target",
          replies=ok(ControlList, "Disabled targets")),
    Route(method="GET", path="/v1/admin/audit", handler=AdminApi.audit, credential="admin",
          summary="Page the audit trail of control actions, oldest first",
          params=(AUDIT_AFTER, AUDIT_LIMIT), replies=ok(AuditPage, "A page"),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/admin/dead-letters", handler=AdminApi.dead_letter_page,
          credential="admin",
          summary="Page the dead letters (envelopes the router or the storage worker gave up "
                  "on), oldest first",
          params=(DEAD_LETTERS_AFTER, DEAD_LETTERS_LIMIT), replies=ok(DeadLetterPage, "A page"),
          problems=(UNAVAILABLE,)),
    Route(method="GET", path="/v1/admin/dead-letters/{seq}", handler=AdminApi.dead_letter,
          credential="admin", summary="One dead letter: its headers and the envelope's bytes",
          params=(SEQ,), replies=ok(DeadLetterDetail, "The dead letter"),
          problems=(404, UNAVAILABLE)),
    Route(method="DELETE", path="/v1/admin/dead-letters/{seq}",
          handler=AdminApi.delete_dead_letter, credential="admin", summary="Drop a dead letter",
          params=(SEQ,), replies=ok(None, "Deleted", 204), problems=(404, UNAVAILABLE)),
    Route(method="POST", path="/v1/admin/dead-letters/{seq}/replay", handler=AdminApi.replay,
          credential="admin",
          summary="Republish the envelope to its original subject (a new stream sequence), "
                  "then delete the dead letter",
          description="409 when the dead letter names no original subject and stream.",
          params=(SEQ,), replies=ok(ReplayResult, "Replayed"), problems=(404, 409, UNAVAILABLE)),
    Route(method="POST", path="/v1/admin/archive", handler=ArchiveApi.run, credential="admin",
          summary="Run the archive now (docs/archive.md): every app or one, up to its age or "
                  "before a timestamp",
          description="The same body as the NATS subject archive.run. 503 when no archive "
                      "worker runs, or when the run outlasts the wait (it goes on).",
          body=ArchiveRunRequest, replies=ok(ArchiveReport, "The run's report"),
          problems=(UNAVAILABLE,)),
    Route(method="POST", path="/v1/admin/gateways/{gateway}/drain", handler=DrainApi.drain,
          credential="admin", summary="Drain a gateway without stopping it",
          description="Served by any gateway, relayed on the NATS subject "
                      "gateway.drain.<gateway>: that gateway takes no new sockets (the "
                      "balancer stops choosing it) and closes its sockets with 4012 over "
                      "COURIER_GATEWAY_DRAIN_S; it stays draining until restarted. 404 when "
                      "no gateway of that id runs, 409 when it drains already.",
          params=(GATEWAY,), replies=ok(DrainStarted, "The drain started"),
          problems=(404, 409, UNAVAILABLE)),
)


def device_routes() -> list[Route]:
    """The routes a device token calls (each refuses disabled devices, users and modules)."""
    return [route for route in ROUTES if route.credential == "device"]
