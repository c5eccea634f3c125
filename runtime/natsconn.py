"""NATS connection and JetStream set-up shared by the services."""

import ssl
from collections.abc import Callable

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError
from prometheus_client import Counter

from runtime.config import ConfigError, NatsConfig
from runtime.tls import client_context
from schemas import nats_permissions as permissions
from schemas.streams import StreamSpec

log = structlog.get_logger(__name__)

NATS_ERRORS = Counter("courier_nats_errors_total",
                      "Errors nats-server reported on this process's connection; 'permission': "
                      "a publish or subscription its credential does not allow",
                      ["kind"])


def _error_kind(message: str) -> str:
    lowered = message.lower()
    if "permissions violation" in lowered:
        return "permission"
    return "authorization" if "authorization violation" in lowered else "other"


async def connect(config: NatsConfig, name: str, credential: str, *,
                  on_reconnected: Callable[[], None] | None = None) -> Client:
    """Connect as ``credential`` (a name of ``schemas.nats_permissions``: its inbox prefix, and
    the seed file configured for this process), with unlimited reconnects: a service outlives
    a nats-server restart. A credential the server refuses raises ``ConfigError``.
    ``on_reconnected`` runs after each reconnect (core NATS messages published meanwhile to
    this client's subscriptions are gone)."""
    connected = False

    async def on_error(exc: Exception) -> None:
        kind = _error_kind(str(exc))
        NATS_ERRORS.labels(kind).inc()
        log.warning("nats_error", error=str(exc), kind=kind, credential=credential)
        if not connected and kind == "authorization":
            # Raised out of the first connect (which would otherwise retry forever): the
            # server refuses this credential, no retry will change that.
            raise ConfigError(f"COURIER_NATS_NKEY_SEED_FILE: nats-server refused the "
                              f"{credential} credential "
                              f"({config.nkey_seed_file or 'none configured'})")

    async def on_disconnect() -> None:
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        log.info("nats_reconnected")
        if on_reconnected is not None:
            on_reconnected()

    inbox_prefix = permissions.credential(credential).inbox_prefix
    if not config.nkey_seed_file:
        log.warning("nats_without_credential", credential=credential)
    client = await nats.connect(
        config.servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        pending_size=64 * 1024 * 1024,
        nkeys_seed=config.nkey_seed_file or None,
        inbox_prefix=inbox_prefix,
        tls=tls_context(config),
    )
    connected = True
    return client


def tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    """The client TLS context of the configured ``COURIER_NATS_TLS_*`` keys (None: no TLS)."""
    if not config.uses_tls:
        return None
    return client_context(config.tls_ca_file, config.tls_cert_file, config.tls_key_file,
                          config.tls_verify)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, config: NatsConfig, *,
                        update: bool = True) -> None:
    """Create the stream, or update its limits if it exists (idempotent, safe in every replica).

    Only the stream's owner may change its configuration (``schemas.nats_permissions``);
    the other services pass ``update=False``: they create the stream if it is missing and
    otherwise leave the owner's configuration in place."""
    max_age_s = spec.max_age_s or config.max_age_s
    stream = js_api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        retention=(js_api.RetentionPolicy.WORK_QUEUE if spec.work_queue
                   else js_api.RetentionPolicy.LIMITS),
        storage=js_api.StorageType.FILE,
        num_replicas=config.replicas,
        duplicate_window=float(min(config.duplicate_window_s, max_age_s)),
        max_age=float(max_age_s),
        max_bytes=config.max_bytes,
        discard=js_api.DiscardPolicy.OLD,
    )
    try:
        await js.add_stream(stream)
    except BadRequestError:
        if not update:
            log.info("stream_config_kept", stream=spec.name)
            return
        await js.update_stream(stream)


async def ensure_pull_consumer(
    js: JetStreamContext, stream: str, durable: str, *, ack_wait_s: float, max_ack_pending: int
) -> None:
    """Create a durable pull consumer shared by every replica of one worker."""
    await js.add_consumer(
        stream,
        js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_ack_pending=max_ack_pending,
            max_deliver=-1,
        ),
    )


async def close(nc: Client) -> None:
    """Flush what was published (acks included), then close.

    Services drain their own work first; nats-py's ``Client.drain()`` can wait forever on the
    internal queue of a pull subscription, so it is not used here."""
    if nc.is_connected:
        try:
            await nc.flush(timeout=5)
        except Exception as exc:  # closing anyway; redelivery covers unflushed acks
            log.warning("flush_failed", error=repr(exc))
    await nc.close()
