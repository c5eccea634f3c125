"""Who may publish and subscribe what on NATS: one credential per kind of process.

This table is the single source of the bus's permissions. ``infra.nats_auth`` renders the
nats-server ``authorization`` block from it (one nkey user per credential) and the permissions
table of docs/nats-subjects.md (drift-tested); services connect with the inbox prefix of their
credential (``runtime.natsconn.connect``). Everything not granted here is refused by the
server: an anonymous connection, a subject nobody listed, a JetStream API call on another
service's stream or consumer.

Each credential gets replies only on its own inbox (``_INBOX.<credential>.>``): nobody may
subscribe ``_INBOX.>``, so no credential reads the replies another one asked for. A responder
may publish only into the inboxes of the credentials allowed to call it (``serve``).

To add a subject, stream, consumer or bucket, add a ``Grant`` to the credentials that need it
with the helpers below, then regenerate the docs table (``python -m infra.nats_auth doc
docs/nats-subjects.md``).
"""

from collections.abc import Iterable
from typing import Final

import msgspec

from schemas.archive import ARCHIVE_RUN
from schemas.buckets import DEPLOYMENT, LEASES
from schemas.callbacks import CALLBACK_PREFIX, CALLBACKS_STREAM
from schemas.control import AUDIT_CONTROL, AUDIT_STREAM, CONTROL, CONTROL_APPLY
from schemas.dead_letters import DLQ_STREAM
from schemas.media import MEDIA_BLOBS, MEDIA_USAGE
from schemas.notifications import NOTIFY_SEND
from schemas.partitions import MAX_PARTITIONS
from schemas.presence import (
    DEVICES_BUCKET,
    GATEWAY_DRAIN_PREFIX,
    GATEWAYS_BUCKET,
    LAST_SEEN_BUCKET,
)
from schemas.push import (
    PUSH_CONSUMER,
    PUSH_DEAD,
    PUSH_JOBS,
    PUSH_STREAM,
    PUSH_TOKENS,
    PUSH_WAKEUPS,
)
from schemas.subjects import (
    ATTACH,
    CHAT,
    CONTACTS_CHANGED,
    DEAD_LETTER_PREFIX,
    DEVICE_CONNECTED_PREFIX,
    DIRECTORY_CHANGED,
    GROUP,
    GROUPS_CHANGED,
    NOTIFY,
    PARTITION_TOKEN,
    RECEIPT,
    ROUTER_CONSUMER,
    STORAGE_CONSUMER,
    STORE_RPC_PREFIX,
    dead_letter,
    edge_subject,
    msgs_stream,
    msgs_subject,
    store_rpc,
    user_frames_subject,
)

JS_API: Final = "$JS.API"
INBOX_ROOT: Final = "_INBOX"

GATEWAY: Final = "gateway"
ROUTER: Final = "router"
STORAGE: Final = "storage_worker"
PUSH: Final = "push_worker"
ARCHIVE: Final = "archive_worker"
BALANCER: Final = "balancer"
SERVICE: Final = "service"
ADMIN: Final = "admin"
BENCH: Final = "bench"


class Grant(msgspec.Struct, frozen=True):
    """One reason a credential needs the bus, and the subjects it takes."""

    purpose: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


class Credential(msgspec.Struct, frozen=True):
    """A NATS user: who holds it, and everything it may publish and subscribe."""

    name: str
    holder: str
    grants: tuple[Grant, ...]

    @property
    def inbox_prefix(self) -> str:
        """Prefix of the inboxes this credential's connections create (replies, JetStream)."""
        return inbox(self.name)

    def publish(self, partitions: int = MAX_PARTITIONS) -> list[str]:
        """What it may publish, templates expanded for ``partitions`` partitions."""
        return _union(_expand(grant.publish, partitions) for grant in self.all_grants())

    def subscribe(self, partitions: int = MAX_PARTITIONS) -> list[str]:
        return _union(_expand(grant.subscribe, partitions) for grant in self.all_grants())

    def all_grants(self) -> tuple[Grant, ...]:
        """The grants plus what every credential has: its own inbox, JetStream account info."""
        return (Grant("replies to its own requests, JetStream acks and deliveries",
                      publish=(f"{JS_API}.INFO",), subscribe=(f"{self.inbox_prefix}.>",)),
                *self.grants)


def _union(groups: Iterable[tuple[str, ...]]) -> list[str]:
    """The subjects of every group, each once, in order."""
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)


def _expand(subjects: tuple[str, ...], partitions: int) -> tuple[str, ...]:
    """Each subject, a ``{p}`` template once per partition: a stream name is one token, so
    "every partition stream" cannot be a wildcard without granting every stream."""
    out: list[str] = []
    for subject in subjects:
        if PARTITION_TOKEN in subject:
            out.extend(subject.replace(PARTITION_TOKEN, str(p)) for p in range(partitions))
        else:
            out.append(subject)
    return tuple(out)


def inbox(credential: str) -> str:
    return f"{INBOX_ROOT}.{credential}"


# ---------------------------------------------------------------------------- grant helpers


def publish(purpose: str, *subjects: str) -> Grant:
    """Core NATS or JetStream publishes (a JetStream ack arrives on the publisher's inbox)."""
    return Grant(purpose, publish=subjects)


def listen(purpose: str, *subjects: str) -> Grant:
    return Grant(purpose, subscribe=subjects)


def serve(purpose: str, subject: str, callers: tuple[str, ...]) -> Grant:
    """Answer requests on ``subject``: replies may go only to the callers' inboxes."""
    return Grant(purpose, subscribe=(subject,),
                 publish=tuple(f"{inbox(caller)}.>" for caller in callers))


def stream(name: str, *, owner: bool) -> Grant:
    """Use a stream: read its info, create it if it is missing; its owner also applies
    configuration changes (``runtime.natsconn.ensure_stream``)."""
    verbs = ("INFO", "CREATE", "UPDATE") if owner else ("INFO", "CREATE")
    return Grant(f"stream `{name}`: {'create, update' if owner else 'create if missing'}, info",
                 publish=tuple(f"{JS_API}.STREAM.{verb}.{name}" for verb in verbs))


def durable(stream_name: str, consumer: str) -> Grant:
    """Create, read and pull from one durable consumer; ack, nak and term its messages."""
    api = f"{JS_API}.CONSUMER"
    return Grant(f"durable consumer `{consumer}` on `{stream_name}`", publish=(
        f"{api}.CREATE.{stream_name}.{consumer}", f"{api}.CREATE.{stream_name}.{consumer}.>",
        f"{api}.DURABLE.CREATE.{stream_name}.{consumer}",
        f"{api}.INFO.{stream_name}.{consumer}", f"{api}.MSG.NEXT.{stream_name}.{consumer}",
        f"$JS.ACK.{stream_name}.{consumer}.>"))


#: Every partition's stream, as a permission template.
PARTITION_STREAM: Final = msgs_stream(PARTITION_TOKEN)


def partition_durable(consumer: str) -> Grant:
    """``durable`` on every partition's stream, plus deleting it: the worker that takes a
    partition over recreates its consumer at the acknowledged floor (``runtime.partitions``)."""
    grant = durable(PARTITION_STREAM, consumer)
    return Grant(grant.purpose, publish=(
        *grant.publish, f"{JS_API}.CONSUMER.DELETE.{PARTITION_STREAM}.{consumer}"))


def read_messages(stream_name: str) -> Grant:
    """Get single messages of a stream by sequence or subject."""
    return Grant(f"read messages of `{stream_name}`", publish=(
        f"{JS_API}.STREAM.MSG.GET.{stream_name}", f"{JS_API}.DIRECT.GET.{stream_name}",
        f"{JS_API}.DIRECT.GET.{stream_name}.>"))


def bucket(name: str, *, write: bool) -> Grant:
    """Open (creating it if missing), get and watch a KV bucket; ``write``: put and delete."""
    kv = f"KV_{name}"
    api = f"{JS_API}.CONSUMER"
    reads = (f"{JS_API}.STREAM.INFO.{kv}", f"{JS_API}.STREAM.CREATE.{kv}",
             f"{JS_API}.STREAM.MSG.GET.{kv}", f"{JS_API}.DIRECT.GET.{kv}",
             f"{JS_API}.DIRECT.GET.{kv}.>", f"{api}.CREATE.{kv}", f"{api}.CREATE.{kv}.>",
             f"{api}.INFO.{kv}.*", f"{api}.DELETE.{kv}.*", f"$JS.FC.{kv}.>")
    return Grant(f"KV `{name}`: {'read, write' if write else 'read'}, watch",
                 publish=(*reads, f"$KV.{name}.>") if write else reads)


def bucket_keys(name: str, *prefixes: str) -> Grant:
    """Read and watch a KV bucket, write only the keys under ``prefixes``."""
    reads = bucket(name, write=False)
    return Grant(f"KV `{name}`: read, watch; write {', '.join(f'`{p}.*`' for p in prefixes)}",
                 publish=(*reads.publish, *(f"$KV.{name}.{prefix}.>" for prefix in prefixes)))


def leases(service: str) -> Grant:
    """A service's partition leases and member keys (``runtime.partitions``): a router cannot
    take or drop a storage worker's lease, nor the other way round."""
    grant = bucket_keys(LEASES.name, f"lease.{service}", f"member.{service}")
    # the first member configured with another ``partitions.lease_ttl_s`` changes the TTL
    return Grant(grant.purpose + "; change the bucket's TTL", publish=(
        *grant.publish, f"{JS_API}.STREAM.UPDATE.KV_{LEASES.name}"))


def any_durable(stream_name: str) -> Grant:
    """Durable consumers of one's own naming on a stream (for services outside Courier)."""
    api = f"{JS_API}.CONSUMER"
    return Grant(f"own durable consumers on `{stream_name}`", publish=(
        f"{JS_API}.STREAM.INFO.{stream_name}", f"{api}.CREATE.{stream_name}.>",
        f"{api}.DURABLE.CREATE.{stream_name}.*", f"{api}.INFO.{stream_name}.*",
        f"{api}.DELETE.{stream_name}.*", f"{api}.MSG.NEXT.{stream_name}.*",
        f"$JS.ACK.{stream_name}.>"))


PRESENCE_BUCKETS: Final = (DEVICES_BUCKET, GATEWAYS_BUCKET, LAST_SEEN_BUCKET)
JS_READ_ONLY: Final = Grant("JetStream inspection: stream and consumer state, read-only", publish=(
    f"{JS_API}.STREAM.NAMES", f"{JS_API}.STREAM.LIST", f"{JS_API}.STREAM.INFO.*",
    f"{JS_API}.CONSUMER.NAMES.*", f"{JS_API}.CONSUMER.LIST.*", f"{JS_API}.CONSUMER.INFO.*.*"))

CREDENTIALS: Final[tuple[Credential, ...]] = (
    Credential(GATEWAY, "every gateway process", (
        publish("accepted sends and receipts, service notifications, attach markers of its "
                "sockets (streams `MSGS_{p}`)",
                *(msgs_subject("*", kind) for kind in (CHAT, RECEIPT, NOTIFY, ATTACH))),
        stream(PARTITION_STREAM, owner=False),
        bucket(DEPLOYMENT.name, write=True),
        publish("storage RPC requests", store_rpc("*")),
        listen("the last hop: edge batches for the devices it holds", edge_subject("*")),
        Grant("a device connected elsewhere: close the older socket",
              publish=(f"{DEVICE_CONNECTED_PREFIX}.*.*",),
              subscribe=(f"{DEVICE_CONNECTED_PREFIX}.*.*",)),
        Grant("ephemeral frames for users with sockets on a gateway (typing, contact updates)",
              publish=(user_frames_subject("*"),), subscribe=(user_frames_subject("*"),)),
        listen("cache invalidation of groups and contacts", GROUPS_CHANGED, CONTACTS_CHANGED),
        serve("serve notification batches from business services", NOTIFY_SEND, (SERVICE,)),
        serve("serve control actions from administrators", CONTROL_APPLY, (ADMIN,)),
        stream(AUDIT_STREAM, owner=True),
        publish("audit records of control actions", AUDIT_CONTROL),
        read_messages(AUDIT_STREAM),
        stream(CALLBACKS_STREAM, owner=True),
        publish("client callbacks to system handlers", f"{CALLBACK_PREFIX}.*"),
        *(bucket(name, write=True) for name in PRESENCE_BUCKETS),
        bucket(CONTROL.name, write=True),
        bucket(PUSH_TOKENS.name, write=True),
        bucket(PUSH_WAKEUPS.name, write=False),
        *(bucket(spec.name, write=True) for spec in (MEDIA_BLOBS, MEDIA_USAGE)),
        stream(DLQ_STREAM, owner=False),
        read_messages(DLQ_STREAM),
        publish("on-request archive runs (admin REST, request/reply)", ARCHIVE_RUN),
        Grant("operators' dead-letter API: delete a dead letter, replay it to its subject",
              publish=(f"{JS_API}.STREAM.MSG.DELETE.{DLQ_STREAM}", msgs_subject("*", GROUP))),
        publish("drain requests of the admin REST API (request/reply)",
                f"{GATEWAY_DRAIN_PREFIX}.*"),
        serve("drain this gateway on request", f"{GATEWAY_DRAIN_PREFIX}.*", (GATEWAY, ADMIN)),
    )),
    Credential(ROUTER, "every router replica", (
        stream(PARTITION_STREAM, owner=False),
        partition_durable(ROUTER_CONSUMER),
        leases("router"),
        bucket(DEPLOYMENT.name, write=True),
        publish("deliveries to devices, one edge batch per gateway", edge_subject("*")),
        stream(DLQ_STREAM, owner=False),
        publish("dead letters", dead_letter("router")),
        listen("device and group cache invalidation", DIRECTORY_CHANGED, GROUPS_CHANGED),
        publish("storage RPC requests it makes", *(store_rpc(op) for op in
                                                     ("get_user", "group_members",
                                                      "group_event"))),
        stream(PUSH_STREAM, owner=False),
        publish("push jobs for offline devices", PUSH_JOBS),
        *(bucket(name, write=False) for name in PRESENCE_BUCKETS),
        bucket(CONTROL.name, write=False),
    )),
    Credential(STORAGE, "every storage worker", (
        stream(PARTITION_STREAM, owner=True),
        partition_durable(STORAGE_CONSUMER),
        leases("storage"),
        bucket(DEPLOYMENT.name, write=True),
        publish("group writes it decided (streams `MSGS_{p}`)", msgs_subject("*", GROUP)),
        stream(DLQ_STREAM, owner=True),
        publish("dead letters", dead_letter("storage")),
        publish("cache invalidation", DIRECTORY_CHANGED, GROUPS_CHANGED, CONTACTS_CHANGED),
        serve("serve the storage RPC", f"{STORE_RPC_PREFIX}.*", (GATEWAY, ROUTER)),
        *(bucket(spec.name, write=True) for spec in (MEDIA_BLOBS, MEDIA_USAGE)),
    )),
    Credential(PUSH, "every push worker", (
        stream(PUSH_STREAM, owner=True),
        durable(PUSH_STREAM, PUSH_CONSUMER),
        publish("push dead letters (stream `PUSH`)", PUSH_DEAD),
        stream(DLQ_STREAM, owner=False),
        publish("dead letters", dead_letter("push")),
        bucket(PUSH_TOKENS.name, write=True),
        bucket(PUSH_WAKEUPS.name, write=True),
    )),
    Credential(ARCHIVE, "every archive worker", (
        serve("serve on-request archive runs", ARCHIVE_RUN, (GATEWAY, ADMIN)),
    )),
    Credential(BALANCER, "every balancer process", (
        bucket(GATEWAYS_BUCKET, write=False),
    )),
    Credential(SERVICE, "internal business services", (
        publish("send notification batches (request/reply)", NOTIFY_SEND),
        listen("callbacks of their handlers, as a plain subscription", f"{CALLBACK_PREFIX}.>"),
        any_durable(CALLBACKS_STREAM),
    )),
    Credential(ADMIN, "administrators' and operators' tools", (
        publish("control actions (request/reply)", CONTROL_APPLY),
        publish("archive runs on request (request/reply)", ARCHIVE_RUN),
        publish("drain a gateway (request/reply)", f"{GATEWAY_DRAIN_PREFIX}.*"),
        JS_READ_ONLY,
        read_messages(AUDIT_STREAM),
        read_messages(PUSH_STREAM),
        read_messages(DLQ_STREAM),
        listen("dead letters of the workers", f"{DEAD_LETTER_PREFIX}.>"),
        *(bucket(name, write=False) for name in (*PRESENCE_BUCKETS, CONTROL.name,
                                                 LEASES.name)),
    )),
    Credential(BENCH, "the benchmark's NATS floor (`bench/`, embedded mode only)", (
        Grant("its own subjects", publish=("bench.>",), subscribe=("bench.>",)),
        stream("BENCH_FLOOR", owner=True),
        durable("BENCH_FLOOR", "forwarder"),
    )),
)

BY_NAME: Final = {credential.name: credential for credential in CREDENTIALS}


def credential(name: str) -> Credential:
    return BY_NAME[name]


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``pattern`` covers every subject ``subject`` stands for (as nats-server checks a
    permission): ``*`` is one token, a final ``>`` one or more; a wildcard in ``subject`` is
    covered only by a wildcard at least as wide."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or have[index] == ">":
            return False
        if token != "*" and token != have[index]:
            return False
    return len(want) == len(have)


def may_publish(name: str, subject: str) -> bool:
    return any(subject_matches(p, subject) for p in credential(name).publish())


def may_subscribe(name: str, subject: str) -> bool:
    return any(subject_matches(p, subject) for p in credential(name).subscribe())
