"""OpenAPI paths of groups, contacts, blocks, presence and group receipts (merged into
``gateway.openapi.openapi_document``). Every route takes the device's bearer token."""

from typing import Any, Final

from gateway.openapi_features import rate_limited_writes
from schemas.contacts import ContactEntry, ContactList, ContactRequestBody, PresenceList
from schemas.groups import (
    AddMembersRequest,
    CreateGroupRequest,
    GroupInfo,
    GroupList,
    GroupReceipts,
    RenameGroupRequest,
    SetRoleRequest,
)

#: Body types whose JSON Schema goes into ``components``.
SOCIAL_TYPES: Final[list[Any]] = [CreateGroupRequest, RenameGroupRequest, AddMembersRequest,
                                  SetRoleRequest, GroupInfo, GroupList, GroupReceipts,
                                  ContactRequestBody, ContactEntry, ContactList, PresenceList]

_BEARER: Final[list[dict[str, list[str]]]] = [{"bearer": []}]


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "Problem", "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}} for s in statuses}


def _path(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names]


def _op(summary: str, ok: str, reply: str | None, problems: tuple[int, ...], *,
        body: str | None = None, params: tuple[str, ...] = (), description: str = "",
        status: str = "200") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "security": _BEARER, "parameters": _path(*params),
        "responses": {status: {"description": ok, **({"content": _json(reply)} if reply else {})},
                      **_problems(401, *problems, 503)}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    if description:
        operation["description"] = description
    return operation


def social_paths() -> dict[str, Any]:
    write = (403, 404, 409, 422)
    return rate_limited_writes({
        "/v1/groups": {
            "post": _op("Create a group; the caller becomes its owner", "Created", "GroupInfo",
                        (400, 403, 404, 409, 413, 422), body="CreateGroupRequest", status="201",
                        description="Without `id` the server picks one. Members must be "
                                    "registered users (404 otherwise); at most "
                                    "`groups.max_members` members, owner included (422)."),
            "get": _op("My groups, most recently changed first", "Groups", "GroupList", ()),
        },
        "/v1/groups/{group}": {
            "get": _op("A group and its members (members only)", "Group", "GroupInfo",
                       (403, 404, 422), params=("group",)),
            "patch": _op("Rename a group (owner, admins)", "Renamed", "GroupInfo",
                         (400, *write), body="RenameGroupRequest", params=("group",)),
        },
        "/v1/groups/{group}/members": {"post": _op(
            "Add members (owner, admins)", "Added", "GroupInfo", (400, *write, 413),
            body="AddMembersRequest", params=("group",),
            description="New members see the group's messages from the system message that "
                        "adds them on, not before. 409 when the group would exceed "
                        "`groups.max_members` or every user is already a member.")},
        "/v1/groups/{group}/members/{user}": {"delete": _op(
            "Remove a member (owner: anyone but itself; admins: plain members)", "Removed",
            "GroupInfo", write, params=("group", "user"),
            description="The removed member gets the system message of its removal and no "
                        "message after it; what it received before stays in its history.")},
        "/v1/groups/{group}/members/{user}/role": {"put": _op(
            "Change a member's role (owner only)", "Changed", "GroupInfo", (400, *write),
            body="SetRoleRequest", params=("group", "user"),
            description="Role `owner` hands ownership over; the previous owner becomes an "
                        "admin.")},
        "/v1/groups/{group}/leave": {"post": _op(
            "Leave a group", "Left (the group as it was left)", "GroupInfo", write,
            params=("group",),
            description="An owner's ownership passes to the longest-standing admin, else "
                        "member.")},
        "/v1/conversations/{conversation}/messages/{message_id}/receipts": {"get": _op(
            "Receipt counters of a group message (members who received it)", "Counters",
            "GroupReceipts", (403, 404, 422), params=("conversation", "message_id"),
            description="`delivered`: recipients one of whose devices acknowledged it (or "
                        "who read up to it); `read`: recipients whose read marker reached "
                        "it. Recipients are the members at the message's seq but its "
                        "sender.")},
        "/v1/contacts": {"get": _op(
            "My contacts, pending requests (incoming, outgoing) and blocked users", "Contacts",
            "ContactList", ())},
        "/v1/contacts/requests": {"post": _op(
            "Ask a user to become a contact", "The relation now (`outgoing`, or `contact` if "
            "they had asked too)", "ContactEntry", (400, 403, 404, 409, 422),
            body="ContactRequestBody")},
        "/v1/contacts/requests/{user}/accept": {"post": _op(
            "Accept a contact request", "Now contacts", "ContactEntry", (404, 422),
            params=("user",))},
        "/v1/contacts/requests/{user}/decline": {"post": _op(
            "Decline a contact request", "Declined", "ContactEntry", (404, 422),
            params=("user",))},
        "/v1/contacts/requests/{user}": {"delete": _op(
            "Cancel my contact request", "Cancelled", "ContactEntry", (404, 422),
            params=("user",))},
        "/v1/contacts/{user}": {"delete": _op(
            "Remove a contact (both sides)", "Removed", "ContactEntry", (404, 422),
            params=("user",))},
        "/v1/blocks/{user}": {
            "put": _op("Block a user: it can no longer message me, send me requests or see "
                       "my presence; any contact or request between us ends", "Blocked",
                       "ContactEntry", (404, 422), params=("user",)),
            "delete": _op("Unblock a user", "Unblocked", "ContactEntry", (404, 422),
                          params=("user",)),
        },
        "/v1/presence": {"get": {
            **_op("Presence of users I may see (contacts who do not block me)", "Presence",
                  "PresenceList", (422,)),
            "parameters": [{"name": "users", "in": "query", "required": True,
                            "description": "Comma-separated user ids (at most 500)",
                            "schema": {"type": "string"}}]}},
    })
