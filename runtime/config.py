"""Typed configuration, loaded once in each process's ``main`` and passed down.

Sources, later ones winning: defaults, a TOML file named by ``COURIER_CONFIG`` (sections as
below), environment variables ``COURIER_<SECTION>_<KEY>`` (for example
``COURIER_GATEWAY_PORT=8081``). Every value is validated at start; an error names the key.
Unknown ``COURIER_`` variables and unknown file keys are errors too, so typos do not pass
silently.
"""

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from runtime.nkey import user_public_key
from schemas.media import MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES

ENV_PREFIX = "COURIER_"
CONFIG_FILE_ENV = "COURIER_CONFIG"

MIN_SECRET_BYTES = 32

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(Exception):
    """A configuration value is missing, malformed or unknown; the message names the key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class NatsConfig(_Section, frozen=True):
    """NATS connection and the partition streams."""

    #: NATS server URL(s), comma-separated for a cluster.
    url: str = "nats://127.0.0.1:4222"
    #: Stream replicas: 1 on a single node, 3 on a cluster (durability across machines).
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    #: Window in which JetStream drops a republished message id (client retries).
    duplicate_window_s: Positive = 600
    #: How long the stream keeps envelopes for consumers that are behind.
    max_age_s: Positive = 7 * 24 * 3600
    #: How long a worker may hold an envelope unacknowledged before JetStream redelivers it
    #: (a partition taken over from a crashed worker is read again from its acknowledged
    #: floor at once, see ``partitions.lease_ttl_s``).
    ack_wait_s: PositiveFloat = 5.0
    #: Stream size cap in bytes (-1: no cap; the nats-server's own limits still apply).
    max_bytes: Annotated[int, msgspec.Meta(ge=-1)] = -1
    #: File holding this process's nkey seed (``SU...``, made by ``python -m infra.nats_auth
    #: generate``); each kind of service has its own. Empty: connect without a credential,
    #: which only a nats-server without authorization accepts.
    nkey_seed_file: str = ""
    #: Connect to NATS over TLS (also implied by ``tls://`` URLs).
    tls: bool = False
    #: PEM file of the CAs that sign the NATS servers' certificates (empty: the system's CAs).
    tls_ca_file: str = ""
    #: PEM client certificate, for servers that require client certificates (``verify``).
    tls_cert_file: str = ""
    #: PEM private key of ``tls_cert_file``.
    tls_key_file: str = ""
    #: Verify the servers' certificates and host names (turn off only for testing).
    tls_verify: bool = True

    @property
    def servers(self) -> list[str]:
        """The server URLs of ``url`` (the client connects to one, fails over to the others)."""
        return [server.strip() for server in self.url.split(",") if server.strip()]

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(url.startswith("tls://") for url in self.servers)


class AuthConfig(_Section, frozen=True):
    """Tokens: HS256 with ``secret``, or RS256/ES256/EdDSA with ``public_key_file``."""

    #: HS256 signing secret of device tokens (32+ bytes).
    secret: str = ""
    #: PEM public key verifying device tokens signed with RS256, ES256 or EdDSA.
    public_key_file: str = ""
    #: Token signature algorithm.
    algorithm: Literal["HS256", "RS256", "ES256", "EdDSA"] = "HS256"
    #: Required ``iss`` claim (empty: not checked).
    issuer: str = ""
    #: Required ``aud`` claim (empty: not checked).
    audience: str = ""
    #: Lifetime of tokens minted by the dev registration endpoint.
    token_ttl_s: Positive = 24 * 3600
    #: Serve ``POST /v1/dev/devices`` (register a device, get a token). Embedded mode only.
    dev_registration: bool = False
    #: Services authenticate the internal REST API with this bearer secret.
    service_secret: str = ""
    #: Administrators authenticate ``/v1/admin/*`` with this bearer secret (32+ bytes; empty:
    #: the admin API refuses every request).
    admin_secret: str = ""
    #: HS256 key of the connection tickets the balancer mints and gateways accept (32+ bytes,
    #: shared by the balancer and every gateway, different from ``secret``). Empty: gateways
    #: refuse tickets and the balancer cannot start.
    ticket_secret: str = ""
    #: Lifetime of a connection ticket (never past the device token's own expiry).
    ticket_ttl_s: Annotated[int, msgspec.Meta(ge=5, le=300)] = 30


class GatewayConfig(_Section, frozen=True):
    """WebSocket and REST front door."""

    #: Address the HTTP/WebSocket server binds.
    host: str = "127.0.0.1"
    #: Port of the HTTP/WebSocket server (0 picks a free one).
    port: Port = 8080
    #: Names this gateway in logs, metrics, envelopes, presence and its delivery subject
    #: ``edge.<id>``; must be unique per running process (letters, digits, ``_`` and ``-``,
    #: at most 64: it is a NATS subject token). Default: ``gw-<port>-<random>``.
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{0,64}$")] = ""
    #: Largest frame (and REST body) accepted; larger frames close the socket with 1009.
    #: At most 900 KiB so an envelope fits NATS's default 1 MiB max_payload.
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=900 * 1024)] = 64 * 1024
    #: Frames queued for one socket before it is closed as a slow consumer (4008).
    send_queue: Annotated[int, msgspec.Meta(ge=8, le=100_000)] = 1024
    #: Byte budget of one socket's outbound frames: its send queue plus what its transport
    #: holds unsent. A socket over it is closed as a slow consumer (4008); during a sync each
    #: backlog frame waits until it fits. At least ``max_frame_bytes``.
    send_buffer_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=1024**3)] = 4 * 1024**2
    #: Byte budget of the live frames held for one socket until its sync completes (from its
    #: opening to its first sync, and during each sync); over it the socket is closed (4008).
    #: At least ``max_frame_bytes``.
    sync_buffer_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=1024**3)] = 4 * 1024**2
    #: A socket whose frame write makes no progress for this long (its client stopped
    #: reading) is closed as a slow consumer (4008).
    write_stall_s: Annotated[float, msgspec.Meta(ge=0.5, le=600.0)] = 10.0
    #: Once the gateway closes a socket, how long its client gets to read the close frame,
    #: answer it and end the connection; then the transport is aborted.
    close_timeout_s: Annotated[float, msgspec.Meta(ge=0.1, le=60.0)] = 5.0
    #: WebSocket ping interval; a socket that does not answer is closed.
    heartbeat_s: PositiveFloat = 20.0
    #: Frames per second one device may send, sustained, on all its sockets together (the
    #: bucket is the device's, so reconnecting does not refill it).
    rate_per_s: PositiveFloat = 200.0
    #: Burst of the per-device frame bucket.
    rate_burst: Positive = 400
    #: Rate-limited or invalid frames in a row before the socket is closed (4009).
    max_strikes: Positive = 50
    #: On shutdown, how long to wait for closed sockets' handlers to finish.
    drain_timeout_s: PositiveFloat = 10.0
    #: A drain (SIGTERM, or the admin drain) closes this gateway's sockets with 4012 spread
    #: evenly over this long, so their clients do not all reconnect in the same instant.
    #: Below ``process.shutdown_timeout_s``.
    drain_s: Annotated[float, msgspec.Meta(ge=0.0, le=600.0)] = 2.0
    #: The WebSocket URL clients reach this gateway at, handed out by the balancer. Empty:
    #: ``ws://<host>:<port>/v1/ws``.
    public_url: str = ""
    #: A gateway refreshes its presence beat every third of this; when it dies, its devices
    #: count as offline for everyone after at most this long.
    presence_ttl_s: Annotated[float, msgspec.Meta(ge=1.0, le=300.0)] = 10.0
    #: Backlog page size when a device syncs.
    sync_page: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500
    #: How long a gateway trusts that a recipient exists before asking storage again; while
    #: storage is away, a recipient it knew stays known (users are never deleted).
    recipient_cache_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600.0)] = 30.0
    #: Sends of one socket published to JetStream at once, awaiting their acks; the next
    #: send waits for a slot (the socket's frames are not read meanwhile). Replies still
    #: come in frame order.
    send_window: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    #: Sends published and awaiting JetStream's ack on the whole gateway, all sockets: a
    #: send waits for a slot before its publish starts, so under overload sends queue here,
    #: not inside the 5 s publish timeout (where they would fail with ``unavailable``).
    publish_window: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1024
    #: How long the gateway gathers the acks of all its sockets before it publishes them,
    #: one receipt envelope per partition.
    ack_flush_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    #: Ack items of one partition that publish at once, before the tick ends; also the most
    #: one receipt envelope carries (1,000 items fit NATS's 1 MiB max_payload). A failed
    #: publish keeps at most four times this per partition for the next tick (then the
    #: oldest are dropped: those messages are sent again at the device's next sync).
    ack_batch_max: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1000


class BalancerConfig(_Section, frozen=True):
    """The balancer (``python -m balancer``): tells clients which gateway to connect to."""

    #: Address the balancer's HTTP server binds.
    host: str = "127.0.0.1"
    #: Port of the balancer's HTTP server (0 picks a free one).
    port: Port = 8090
    #: ``Retry-After`` of the 503 answered while no gateway can take a socket.
    retry_after_s: Annotated[int, msgspec.Meta(ge=1, le=300)] = 2


class StoreConfig(_Section, frozen=True):
    """The message store owned by the storage worker."""

    #: Store implementation.
    backend: Literal["sqlite", "cassandra"] = "sqlite"
    #: SQLite database file (embedded mode).
    sqlite_path: str = ".data/courier.db"
    #: Messages per transaction when the worker catches up.
    batch: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500
    #: After a partition's batch smaller than ``batch``, the worker waits this long before
    #: fetching again, so at low rates one transaction stores several messages rather than
    #: one each (the store's commits are most of its cost). Adds at most this much to a
    #: sync's barrier wait; it does not delay live delivery (routers). 0: fetch at once.
    #: 10 cut the server's CPU per message at 1,000 msg/s by a tenth (docs/benchmarks.md).
    linger_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    #: How long a sync waits for the worker to store what was accepted before it.
    barrier_timeout_s: PositiveFloat = 10.0
    #: Storage RPC requests (sync, history, registry...) one worker serves at once; when all
    #: are busy the next request waits for a slot, and a requester that waits past its
    #: deadline gets ``unavailable``.
    rpc_concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    #: Cassandra nodes the driver contacts first, as ``host:port`` (port 9042 if omitted);
    #: it discovers the rest of the cluster from them.
    cassandra_contact_points: list[str] = msgspec.field(
        default_factory=lambda: ["127.0.0.1:9042"])
    #: Keyspace of Courier's tables (lowercase, at most 48 characters).
    cassandra_keyspace: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,47}$")] = (
        "courier")
    #: Create the keyspace at start if it is missing (else it must exist); tables are always
    #: created and migrated at start.
    cassandra_create_keyspace: bool = True
    #: Replication of a keyspace created at start: ``SimpleStrategy:<rf>`` or
    #: ``<dc>:<rf>,<dc>:<rf>`` (NetworkTopologyStrategy).
    cassandra_replication: str = "SimpleStrategy:1"
    #: Data center whose nodes serve requests (empty: the contact points' data center).
    cassandra_local_dc: str = ""
    #: Consistency level of reads and writes (serial level for LWTs: LOCAL_SERIAL for the
    #: LOCAL_ levels, else SERIAL).
    cassandra_consistency: Literal[
        "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_ONE", "LOCAL_QUORUM"
    ] = "LOCAL_QUORUM"
    #: User for Cassandra's PasswordAuthenticator (empty: no authentication).
    cassandra_username: str = ""
    #: Password of ``cassandra_username``.
    cassandra_password: str = ""
    #: Connect to Cassandra over TLS.
    cassandra_tls: bool = False
    #: PEM file of the CAs that sign the nodes' certificates (empty: the system's CAs).
    cassandra_tls_ca_file: str = ""
    #: PEM client certificate, for nodes that require client authentication.
    cassandra_tls_cert_file: str = ""
    #: PEM private key of ``cassandra_tls_cert_file``.
    cassandra_tls_key_file: str = ""
    #: Verify the nodes' certificates and host names (turn off only for testing).
    cassandra_tls_verify: bool = True
    #: How long one Cassandra request may take before it fails (the worker then retries).
    cassandra_request_timeout_s: PositiveFloat = 10.0


class RetentionConfig(_Section, frozen=True):
    """What is kept, per app. Apps not named use ``default_days``."""

    #: Days messages are kept, for apps without their own entry in ``days``.
    default_days: Positive = 30
    #: Apps whose messages are deleted once every recipient device has acknowledged them.
    ephemeral_apps: list[str] = []
    #: ``app=days`` pairs overriding ``default_days``.
    days: dict[str, int] = {}
    #: How often the storage worker applies retention.
    purge_interval_s: PositiveFloat = 60.0


class LogConfig(_Section, frozen=True):
    """Structured logs on stderr."""

    #: Lowest level logged.
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: JSON lines for machines, or aligned text for people.
    format: Literal["json", "console"] = "json"


class ProcessConfig(_Section, frozen=True):
    """Every service process's lifecycle."""

    #: Longest a service may take to drain and stop after SIGTERM; past it the process logs
    #: the tasks still running (``shutdown_timeout``, with their stacks) and exits with status
    #: 1. Keep it below the grace period of whatever sends SIGTERM (``make run`` waits 15 s).
    shutdown_timeout_s: Annotated[float, msgspec.Meta(ge=1.0, le=3600.0)] = 14.0


class MetricsConfig(_Section, frozen=True):
    """Prometheus exposition for services without an HTTP server of their own."""

    #: Address the workers' metrics servers bind.
    host: str = "127.0.0.1"
    #: Router metrics port (0 picks a free one; the chosen port is logged).
    router_port: Port = 9101
    #: Storage worker metrics port (0 picks a free one).
    storage_port: Port = 9102
    #: Push worker metrics port (0 picks a free one).
    push_port: Port = 9103
    #: Archive worker metrics port (0 picks a free one).
    archive_port: Port = 9104


class PushConfig(_Section, frozen=True):
    """Push delivery to offline devices (the push worker)."""

    #: ``platform=provider`` pairs; platforms: apns, apns_sandbox, fcm, webpush, webhook;
    #: providers: sns, webhook, log. Platforms not named use ``default_provider``.
    providers: dict[str, str] = {}
    #: Provider of the platforms not named in ``providers``.
    default_provider: Literal["sns", "webhook", "log"] = "log"
    #: Jobs of one device and conversation arriving within this window become one push.
    collapse_window_s: Annotated[float, msgspec.Meta(ge=0.01, le=300.0)] = 2.0
    #: Sends of one wake-up (first try and retries) before it is dead-lettered on push.dead.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 6
    #: First retry delay; doubles per attempt up to ``retry_max_s``.
    retry_base_s: PositiveFloat = 1.0
    #: Longest retry delay.
    retry_max_s: PositiveFloat = 300.0
    #: Pushes per user and minute, sustained; more wait (and coalesce) until allowed.
    user_per_minute: PositiveFloat = 30.0
    #: Pushes a user may get at once before ``user_per_minute`` applies.
    user_burst: Positive = 10
    #: Newest message ids kept in one wake-up's details (never sent to the push service).
    max_ids: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    #: Pushes one worker sends concurrently.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 32
    #: How long a worker may hold a job unacknowledged before JetStream redelivers it.
    ack_wait_s: PositiveFloat = 30.0
    #: Jobs one worker holds at most (JetStream max_ack_pending of the push consumer).
    max_pending: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    #: How long an unsent job is kept in the PUSH stream.
    job_max_age_s: Positive = 86_400
    #: AWS region of the SNS platform applications.
    sns_region: str = "us-east-1"
    #: SNS endpoint URL (empty: AWS; set for an SNS-compatible server such as moto).
    sns_endpoint_url: str = ""
    #: SNS platform application ARN for the apns platform.
    sns_apns_arn: str = ""
    #: SNS platform application ARN for the apns_sandbox platform.
    sns_apns_sandbox_arn: str = ""
    #: SNS platform application ARN for the fcm platform.
    sns_fcm_arn: str = ""
    #: URL the webhook provider POSTs wake-ups to.
    webhook_url: str = ""
    #: HMAC-SHA256 key of the webhook's ``Courier-Signature`` header (32+ bytes).
    webhook_secret: str = ""
    #: Timeout of one webhook request.
    webhook_timeout_s: PositiveFloat = 5.0


class NotifyConfig(_Section, frozen=True):
    """Business notifications sent by internal services."""

    #: Notifications in one ``notify.send`` request or ``POST /v1/notifications`` call.
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    #: Largest notification body in bytes.
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1, le=1024 * 1024)] = 16 * 1024
    #: Largest notification request in bytes.
    max_request_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024
    #: Users per page when a broadcast walks the device registry.
    broadcast_page: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500


class CallbacksConfig(_Section, frozen=True):
    """System handlers clients may call with a ``callback`` frame."""

    #: Handler names (published on ``callback.<handler>``); other names get unknown_recipient.
    handlers: list[str] = []
    #: Largest callback body in bytes (frames are bounded by the gateway's max_frame_bytes too).
    max_body_bytes: Positive = 32 * 1024
    #: How long the CALLBACKS stream keeps a callback for its consumers.
    max_age_s: Positive = 7 * 24 * 3600


class ControlConfig(_Section, frozen=True):
    """Disabling devices, users and modules; the audit trail."""

    #: How long the AUDIT stream keeps control actions.
    audit_max_age_days: Positive = 365


class DlqConfig(_Section, frozen=True):
    """Dead letters of the router and the storage worker (stream ``DLQ``)."""

    #: Times an envelope whose handler fails on it alone (not an outage) is tried before it
    #: is dead-lettered and the stream moves on.
    attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    #: Delay before the second of those tries; doubles per try (capped at 5 s).
    retry_s: Annotated[float, msgspec.Meta(ge=0.01, le=5.0)] = 0.2
    #: How long the DLQ stream keeps dead letters.
    max_age_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30


class GroupsConfig(_Section, frozen=True):
    """Groups (enforced by the storage worker)."""

    #: Most members a group may have, its owner included.
    max_members: Annotated[int, msgspec.Meta(ge=2, le=100_000)] = 1000


StrangerPolicy = Literal["allow", "contacts_only"]


class KeysConfig(_Section, frozen=True):
    """The end-to-end encryption key directory (docs/e2ee.md)."""

    #: A claim that leaves a device fewer one-time keys than this sends it a ``keys_low`` frame
    #: (0: never).
    low_water: Annotated[int, msgspec.Meta(ge=0, le=100)] = 10


class ContactsConfig(_Section, frozen=True):
    """Who may open a 1:1 conversation (enforced by the gateway)."""

    #: ``allow``: anyone may message anyone who has not blocked them; ``contacts_only``: direct
    #: messages only between accepted contacts.
    strangers: StrangerPolicy = "allow"
    #: ``app=policy`` pairs overriding ``strangers`` for the tokens of an app.
    strangers_by_app: dict[str, StrangerPolicy] = {}

    def strangers_for(self, app: str) -> StrangerPolicy:
        return self.strangers_by_app.get(app, self.strangers)


class PresenceConfig(_Section, frozen=True):
    """Presence subscriptions and typing indicators (the gateway)."""

    #: Users one connection may watch at once.
    max_watched: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    #: Per-connection token bucket for ``typing`` frames: sustained frames per second.
    typing_per_s: PositiveFloat = 1.0
    #: Per-connection token bucket for ``typing`` frames: burst.
    typing_burst: Positive = 5


class LimitsConfig(_Section, frozen=True):
    """Rate limits per identity (user, device) and per source address, kept by each gateway
    process (see docs/protocol.md, "Rate limiting"). Each is a token bucket: ``*_per_s``
    sustained, ``*_burst`` at once. The per-device frame bucket is ``gateway.rate_per_s``."""

    #: ``send`` and ``callback`` frames per second of one user, all its devices together.
    user_sends_per_s: PositiveFloat = 400.0
    #: Burst of the per-user send bucket.
    user_sends_burst: Positive = 800
    #: New WebSocket connections per second of one device.
    device_connects_per_s: PositiveFloat = 0.5
    #: Burst of the per-device connection bucket.
    device_connects_burst: Positive = 10
    #: New WebSocket connections per second of one user, all its devices together.
    user_connects_per_s: PositiveFloat = 2.0
    #: Burst of the per-user connection bucket.
    user_connects_burst: Positive = 30
    #: WebSocket upgrade attempts per second from one source address (IPv6: per /64),
    #: counted before the token is checked. Generous: many users can share one NAT address.
    address_upgrades_per_s: PositiveFloat = 20.0
    #: Burst of the per-address upgrade bucket.
    address_upgrades_burst: Positive = 200
    #: ``POST /v1/dev/devices`` registrations per second from one source address.
    address_registrations_per_s: PositiveFloat = 1.0
    #: Burst of the per-address registration bucket.
    address_registrations_burst: Positive = 20
    #: REST reads (GET with a device token) per second of one user, all its devices together.
    user_reads_per_s: PositiveFloat = 50.0
    #: Burst of the per-user REST read bucket.
    user_reads_burst: Positive = 200
    #: REST writes (POST, PUT, PATCH, DELETE with a device token) per second of one user.
    user_writes_per_s: PositiveFloat = 10.0
    #: Burst of the per-user REST write bucket.
    user_writes_burst: Positive = 50
    #: Groups one user may create per second, sustained (0.2: 12 a minute).
    user_groups_per_s: PositiveFloat = 0.2
    #: Burst of the per-user group creation bucket.
    user_groups_burst: Positive = 20
    #: Contact requests one user may send per second, sustained (0.1: 6 a minute).
    user_contact_requests_per_s: PositiveFloat = 0.1
    #: Burst of the per-user contact request bucket.
    user_contact_requests_burst: Positive = 20
    #: Keys (users, devices or addresses) each bucket family keeps at most; idle buckets are
    #: dropped first, then the least recently used.
    max_keys: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000
    #: Header the load balancer sets to the client's address (for example ``X-Forwarded-For``:
    #: its last entry counts). Empty: the TCP peer address. Set it only when every request
    #: comes through that proxy, or clients choose their own address.
    client_address_header: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9\-]{0,64}$")] = ""


class MediaConfig(_Section, frozen=True):
    """Attachments (see docs/media.md): where blobs live, the limits the gateway applies when
    it hands out an upload slot, and the sweeper (in the storage worker) that deletes them."""

    #: Blob store: ``local`` files served by the gateway (embedded mode) or an ``s3`` bucket.
    backend: Literal["local", "s3"] = "local"
    #: Directory of the local blob store (gateways and the storage worker share it).
    local_dir: str = ".data/media"
    #: Base URL of the gateway in local upload and download URLs, as clients reach it (empty:
    #: ``http://<gateway.host>:<gateway.port>``).
    public_url: str = ""
    #: HMAC-SHA256 key of local upload and download URLs (32+ bytes; empty: derived from
    #: ``auth.secret``).
    url_secret: str = ""
    #: S3 bucket of the blobs.
    s3_bucket: str = ""
    #: S3 endpoint URL (empty: AWS; set for SeaweedFS or MinIO).
    s3_endpoint_url: str = ""
    #: AWS region of the bucket.
    s3_region: str = "us-east-1"
    #: S3 access key id (empty: boto3's default credential chain).
    s3_access_key: str = ""
    #: S3 secret access key.
    s3_secret_key: str = ""
    #: Create the bucket at start when it is missing.
    s3_create_bucket: bool = False
    #: Largest blob in bytes, for apps without their own entry in ``max_bytes_by_app``
    #: (at most 10,000 parts of ``part_bytes``: S3 allows 10,000 parts, 48.8 TiB at 5 GiB).
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS * MAX_PART_BYTES)] = 100 * 1024**2
    #: ``app=bytes`` pairs overriding ``max_bytes`` (each 1 to 10,000 parts of ``part_bytes``).
    max_bytes_by_app: dict[str, int] = {}
    #: Part size of multipart uploads: a blob larger than this is uploaded in parts of this
    #: size (the last smaller), each its own presigned URL (5 MiB, S3's smallest part, to
    #: 5 GiB, its largest).
    part_bytes: Annotated[int, msgspec.Meta(ge=MIN_PART_BYTES, le=MAX_PART_BYTES)] = 64 * 1024**2
    #: Bytes of live blobs (uploaded or reserved, not yet swept) one user may hold.
    user_quota_bytes: Annotated[int, msgspec.Meta(ge=1, le=2**62)] = 1024**3
    #: Content types an upload may declare: ``type/subtype`` or ``type/*``.
    content_types: list[str] = msgspec.field(default_factory=lambda: [
        "application/octet-stream", "image/*", "video/*", "audio/*", "application/pdf",
        "text/plain"])
    #: Lifetime of presigned upload and download URLs.
    url_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 300
    #: A blob no message references this long after its upload slot was made is deleted.
    unreferenced_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] = 24 * 3600
    #: How often the storage worker's sweeper deletes expired blobs.
    sweep_interval_s: Annotated[float, msgspec.Meta(ge=0.1, le=86_400.0)] = 60.0

    def max_bytes_for(self, app: str) -> int:
        return self.max_bytes_by_app.get(app, self.max_bytes)

    def allows(self, content_type: str) -> bool:
        """Whether ``content_type`` matches one of ``content_types``."""
        kind = content_type.partition("/")[0]
        return any(allowed in (content_type, f"{kind}/*") for allowed in self.content_types)


class PartitionsConfig(_Section, frozen=True):
    """How messages are split over streams and workers (docs/architecture.md)."""

    #: Partitions (P): conversations map to P streams, each consumed by one storage worker and
    #: one router at a time. Fixed for a deployment's life: stored positions depend on it
    #: (docs/architecture.md, "Changing the partition count").
    count: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    #: A partition's lease lapses this long after its owner's last renewal; another worker
    #: then takes it over. Owners renew every third of it.
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=1.0, le=120.0)] = 6.0


class RouterConfig(_Section, frozen=True):
    """The router's last hop: one edge batch per gateway per batch of a partition."""

    #: Largest edge batch one publish carries (also bounded by the NATS server's
    #: max_payload); a batch's frames for one gateway past it go in more publishes.
    edge_batch_bytes: Annotated[int, msgspec.Meta(ge=4 * 1024, le=64 * 1024**2)] = 256 * 1024
    #: Devices whose gateway a router remembers from attach markers, per partition (least
    #: recently used go first; a device not remembered is looked up in presence).
    routes_per_partition: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000


class ArchiveConfig(_Section, frozen=True):
    """The archive worker (docs/archive.md): old history moved from the store to the blob
    store of ``media`` in verified chunks, read back through the history API."""

    #: Run on the interval (off: only on request, ``POST /v1/admin/archive`` or
    #: ``archive.run``).
    enabled: bool = True
    #: Messages older than this many days are archived, for apps without their own entry in
    #: ``age_days`` (keep it below the retention: the store purges what is past retention,
    #: archived or not). Ephemeral apps (``retention.ephemeral_apps``) are never archived.
    default_age_days: Annotated[int, msgspec.Meta(ge=1, le=36_500)] = 7
    #: ``app=days`` pairs overriding ``default_age_days``.
    age_days: dict[str, int] = {}
    #: Seconds between two runs.
    interval_s: Annotated[float, msgspec.Meta(ge=1.0, le=86_400.0)] = 3600.0
    #: Most messages in one chunk.
    chunk_messages: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    #: Most body bytes in one chunk (a chunk holds at least one message, whatever its size).
    chunk_bytes: Annotated[int, msgspec.Meta(ge=1024, le=256 * 1024**2)] = 8 * 1024**2
    #: Chunks the storage worker keeps decoded in memory for history reads (least recently
    #: used go first; each at most ``chunk_bytes`` of bodies).
    cache_chunks: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The whole configuration tree."""

    app: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")] = "default"
    nats: NatsConfig = NatsConfig()
    auth: AuthConfig = AuthConfig()
    gateway: GatewayConfig = GatewayConfig()
    balancer: BalancerConfig = BalancerConfig()
    store: StoreConfig = StoreConfig()
    retention: RetentionConfig = RetentionConfig()
    log: LogConfig = LogConfig()
    process: ProcessConfig = ProcessConfig()
    metrics: MetricsConfig = MetricsConfig()
    push: PushConfig = PushConfig()
    notify: NotifyConfig = NotifyConfig()
    callbacks: CallbacksConfig = CallbacksConfig()
    control: ControlConfig = ControlConfig()
    dlq: DlqConfig = DlqConfig()
    groups: GroupsConfig = GroupsConfig()
    partitions: PartitionsConfig = PartitionsConfig()
    router: RouterConfig = RouterConfig()
    contacts: ContactsConfig = ContactsConfig()
    keys: KeysConfig = KeysConfig()
    presence: PresenceConfig = PresenceConfig()
    limits: LimitsConfig = LimitsConfig()
    media: MediaConfig = MediaConfig()
    archive: ArchiveConfig = ArchiveConfig()


_SECTIONS: dict[str, type[_Section]] = {
    name: ftype
    for name, ftype in Config.__annotations__.items()
    if isinstance(ftype, type) and issubclass(ftype, _Section)
}


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build and validate the configuration from the file (if named) and the environment."""
    environ = os.environ if env is None else env
    tree: dict[str, Any] = {}
    file_name = environ.get(CONFIG_FILE_ENV)
    if file_name:
        tree = _read_file(Path(file_name))
    _apply_env(tree, environ)
    try:
        config = msgspec.convert(tree, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_name_key(str(exc))) from None
    _check(config)
    return config


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}: cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path} is not valid TOML: {exc}") from None


def _apply_env(tree: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key == "app":
            tree["app"] = raw
            continue
        section, _, field = key.partition("_")
        section_type = _SECTIONS.get(section)
        if section_type is None or field not in section_type.__struct_fields__:
            raise ConfigError(f"{name}: unknown configuration key")
        tree.setdefault(section, {})[field] = _parse_env_value(name, section_type, field, raw)


def _parse_env_value(name: str, section_type: type[_Section], field: str, raw: str) -> Any:
    """Lists are comma-separated; dicts are ``k=v`` pairs separated by commas."""
    annotation = str(section_type.__annotations__[field])
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if annotation.startswith("list["):
        return items
    if annotation.startswith("dict["):
        pairs = [item.partition("=") for item in items]
        if not all(sep for _, sep, _ in pairs):
            raise ConfigError(f"{name}: expected key=value pairs, got {raw!r}")
        return {key.strip(): value.strip() for key, _, value in pairs}
    return raw


def _name_key(error: str) -> str:
    """Turn msgspec's ``... - at `$.gateway.port``` into ``COURIER_GATEWAY_PORT: ...``."""
    message, sep, path = error.rpartition(" - at `$.")
    if not sep:
        return error
    key = ENV_PREFIX + path.rstrip("`").split("[")[0].replace(".", "_").upper()
    return f"{key}: {message}"


def _check(config: Config) -> None:
    if config.auth.public_key_file and not Path(config.auth.public_key_file).is_file():
        raise ConfigError("COURIER_AUTH_PUBLIC_KEY_FILE: no such file")
    if config.auth.algorithm != "HS256" and not config.auth.public_key_file:
        raise ConfigError(f"COURIER_AUTH_PUBLIC_KEY_FILE: {config.auth.algorithm} needs a "
                          "public key file")
    if config.auth.algorithm == "HS256" and config.auth.public_key_file:
        raise ConfigError("COURIER_AUTH_ALGORITHM: HS256 uses a secret, not a public key file")
    if config.auth.algorithm == "HS256" and 0 < len(config.auth.secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"COURIER_AUTH_SECRET: at least {MIN_SECRET_BYTES} bytes for HS256")
    for app, days in config.retention.days.items():
        if days <= 0:
            raise ConfigError(f"COURIER_RETENTION_DAYS: days for {app!r} must be positive")
    for app, days in config.archive.age_days.items():
        if not 1 <= days <= 36_500:
            raise ConfigError(f"COURIER_ARCHIVE_AGE_DAYS: days for {app!r} must be 1..36500")
    if config.gateway.public_url and not config.gateway.public_url.startswith(
            ("ws://", "wss://")):
        raise ConfigError("COURIER_GATEWAY_PUBLIC_URL: a ws:// or wss:// URL")
    for key in ("send_buffer_bytes", "sync_buffer_bytes"):
        if getattr(config.gateway, key) < config.gateway.max_frame_bytes:
            raise ConfigError(f"COURIER_GATEWAY_{key.upper()}: must be at least "
                              "max_frame_bytes")
    _check_nats(config.nats)
    _check_cassandra(config.store)
    _check_notifications(config)
    _check_media(config.media, config.auth)


def _check_nats(nats: NatsConfig) -> None:
    if not nats.servers:
        raise ConfigError("COURIER_NATS_URL: no server URL")
    key = "COURIER_NATS_NKEY_SEED_FILE"
    if nats.nkey_seed_file:
        try:
            seed = Path(nats.nkey_seed_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {nats.nkey_seed_file}: "
                              f"{exc.strerror or exc}") from None
        try:
            user_public_key(seed)
        except ValueError as exc:
            raise ConfigError(f"{key}: {nats.nkey_seed_file}: {exc}") from None
    _check_tls("COURIER_NATS_", nats.uses_tls, nats.tls_ca_file, nats.tls_cert_file,
               nats.tls_key_file)


def parse_contact_point(value: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6 address]:port`` as (host, port); ValueError if bad."""
    host, port = value.strip(), "9042"
    if host.startswith("["):
        host, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad contact point {value!r}")
        port = rest[1:] or port
    elif host.count(":") == 1:
        host, _, port = host.partition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad contact point {value!r}: expected host:port")
    return host, int(port)


def parse_replication(value: str) -> dict[str, str]:
    """Keyspace replication options from ``SimpleStrategy:<rf>`` or ``<dc>:<rf>,...``."""
    entries = [item.strip().partition(":") for item in value.split(",") if item.strip()]
    if not entries or not all(sep and rf.strip().isdigit() and int(rf) > 0
                              for _, sep, rf in entries):
        raise ValueError(f"expected SimpleStrategy:<rf> or <dc>:<rf>,<dc>:<rf>, got {value!r}")
    if entries[0][0].strip() == "SimpleStrategy":
        if len(entries) > 1:
            raise ValueError("SimpleStrategy takes one replication factor")
        return {"class": "SimpleStrategy", "replication_factor": entries[0][2].strip()}
    options = {"class": "NetworkTopologyStrategy"}
    for dc, _, rf in entries:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", dc.strip()) or dc.strip() in options:
            raise ValueError(f"bad or repeated data center {dc.strip()!r}")
        options[dc.strip()] = rf.strip()
    return options


def _check_cassandra(store: StoreConfig) -> None:
    prefix = "COURIER_STORE_CASSANDRA_"
    if not store.cassandra_contact_points:
        raise ConfigError(f"{prefix}CONTACT_POINTS: at least one host:port")
    try:
        for point in store.cassandra_contact_points:
            parse_contact_point(point)
    except ValueError as exc:
        raise ConfigError(f"{prefix}CONTACT_POINTS: {exc}") from None
    try:
        parse_replication(store.cassandra_replication)
    except ValueError as exc:
        raise ConfigError(f"{prefix}REPLICATION: {exc}") from None
    if bool(store.cassandra_username) != bool(store.cassandra_password):
        missing = "PASSWORD" if store.cassandra_username else "USERNAME"
        raise ConfigError(f"{prefix}{missing}: username and password go together")
    _check_tls(prefix, store.cassandra_tls, store.cassandra_tls_ca_file,
               store.cassandra_tls_cert_file, store.cassandra_tls_key_file)


def _check_tls(prefix: str, enabled: bool, ca_file: str, cert_file: str, key_file: str) -> None:
    """The ``<prefix>TLS_*`` files exist, are set only with TLS on, cert and key together."""
    for name, path in {"CA_FILE": ca_file, "CERT_FILE": cert_file, "KEY_FILE": key_file}.items():
        if path and not enabled:
            raise ConfigError(f"{prefix}TLS: TLS_{name} is set but TLS is off")
        if path and not Path(path).is_file():
            raise ConfigError(f"{prefix}TLS_{name}: no such file")
    if bool(cert_file) != bool(key_file):
        missing = "KEY_FILE" if cert_file else "CERT_FILE"
        raise ConfigError(f"{prefix}TLS_{missing}: client certificate and key go together")


_PLATFORMS = ("apns", "apns_sandbox", "fcm", "webpush", "webhook")
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _check_notifications(config: Config) -> None:
    """Secrets, push routing and callback handlers."""
    auth, push = config.auth, config.push
    for key, secret in (("SERVICE_SECRET", auth.service_secret),
                        ("ADMIN_SECRET", auth.admin_secret)):
        if 0 < len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"COURIER_AUTH_{key}: at least {MIN_SECRET_BYTES} bytes")
    if auth.admin_secret and auth.admin_secret == auth.service_secret:
        raise ConfigError("COURIER_AUTH_ADMIN_SECRET: must differ from the service secret")
    if 0 < len(auth.ticket_secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"COURIER_AUTH_TICKET_SECRET: at least {MIN_SECRET_BYTES} bytes")
    if auth.ticket_secret and auth.ticket_secret in (auth.secret, auth.service_secret,
                                                     auth.admin_secret):
        raise ConfigError("COURIER_AUTH_TICKET_SECRET: must differ from the other secrets (a "
                          "ticket must not pass for a device token)")
    for platform, provider in push.providers.items():
        if platform not in _PLATFORMS:
            raise ConfigError(f"COURIER_PUSH_PROVIDERS: unknown platform {platform!r}")
        if provider not in ("sns", "webhook", "log"):
            raise ConfigError(f"COURIER_PUSH_PROVIDERS: unknown provider {provider!r}")
    for platform in _PLATFORMS:
        provider = push.providers.get(platform, push.default_provider)
        if provider == "sns" and platform in ("webpush", "webhook"):
            raise ConfigError(f"COURIER_PUSH_PROVIDERS: SNS cannot deliver to {platform}")
        if provider == "sns" and not getattr(push, f"sns_{platform}_arn"):
            raise ConfigError(f"COURIER_PUSH_SNS_{platform.upper()}_ARN: needed to send "
                              f"{platform} pushes through SNS")
        if provider == "webhook" and not push.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("COURIER_PUSH_WEBHOOK_URL: an http(s) URL is needed for the "
                              "webhook provider")
        if provider == "webhook" and len(push.webhook_secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"COURIER_PUSH_WEBHOOK_SECRET: at least {MIN_SECRET_BYTES} bytes")
    if push.retry_base_s > push.retry_max_s:
        raise ConfigError("COURIER_PUSH_RETRY_BASE_S: must not exceed retry_max_s")
    if push.collapse_window_s * 2 >= push.ack_wait_s:
        raise ConfigError("COURIER_PUSH_COLLAPSE_WINDOW_S: must be under half of ack_wait_s")
    for handler in config.callbacks.handlers:
        if not _SUBJECT_TOKEN.match(handler):
            raise ConfigError(f"COURIER_CALLBACKS_HANDLERS: {handler!r} is not a handler name "
                              "(1-64 of A-Z a-z 0-9 _ -)")


_CONTENT_TYPE = re.compile(
    r"^[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/(\*|[a-z0-9][a-z0-9!#$&^_.+\-]{0,126})$")


def _check_media(media: MediaConfig, auth: AuthConfig) -> None:
    prefix = "COURIER_MEDIA_"
    if 0 < len(media.url_secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{prefix}URL_SECRET: at least {MIN_SECRET_BYTES} bytes")
    if media.backend == "local" and not media.url_secret and auth.public_key_file:
        raise ConfigError(f"{prefix}URL_SECRET: needed by the local backend when tokens are "
                          "verified with a public key (there is no auth.secret to derive it)")
    if media.backend == "s3" and not media.s3_bucket:
        raise ConfigError(f"{prefix}S3_BUCKET: the s3 backend needs a bucket")
    if bool(media.s3_access_key) != bool(media.s3_secret_key):
        missing = "SECRET_KEY" if media.s3_access_key else "ACCESS_KEY"
        raise ConfigError(f"{prefix}S3_{missing}: access key and secret key go together")
    if media.public_url and not media.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"{prefix}PUBLIC_URL: an http(s) URL")
    most = MAX_PARTS * media.part_bytes
    if media.max_bytes > most:
        raise ConfigError(f"{prefix}MAX_BYTES: at most {MAX_PARTS} parts of part_bytes "
                          f"({most} bytes)")
    for app, size in media.max_bytes_by_app.items():
        if not 0 < size <= most:
            raise ConfigError(f"{prefix}MAX_BYTES_BY_APP: bytes for {app!r} must be within "
                              f"[1, {most}] ({MAX_PARTS} parts of part_bytes)")
    if media.unreferenced_ttl_s <= media.url_ttl_s:
        raise ConfigError(f"{prefix}UNREFERENCED_TTL_S: must exceed url_ttl_s (a blob must "
                          "outlive its upload URL)")
    if not media.content_types:
        raise ConfigError(f"{prefix}CONTENT_TYPES: at least one content type")
    for content_type in media.content_types:
        if not _CONTENT_TYPE.match(content_type):
            raise ConfigError(f"{prefix}CONTENT_TYPES: {content_type!r} is not type/subtype "
                              "or type/*")
