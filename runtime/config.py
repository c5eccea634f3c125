"""Typed configuration, loaded once in each process's ``main`` and passed down.

Sources, later ones winning: defaults, a TOML file named by ``COURIER_CONFIG`` (sections as
below), environment variables ``COURIER_<SECTION>_<KEY>`` (for example
``COURIER_GATEWAY_PORT=8081``). Every value is validated at start; an error names the key.
Unknown ``COURIER_`` variables and unknown file keys are errors too, so typos do not pass
silently.
"""

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

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


class NatsConfig(_Section):
    """NATS connection and the ``MSGS`` stream."""

    #: NATS server URL(s), comma-separated for a cluster.
    url: str = "nats://127.0.0.1:4222"
    #: Stream replicas: 1 on a single node, 3 on a cluster (durability across machines).
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    #: Window in which JetStream drops a republished message id (client retries).
    duplicate_window_s: Positive = 600
    #: How long the stream keeps envelopes for consumers that are behind.
    max_age_s: Positive = 7 * 24 * 3600
    #: How long a worker may hold an envelope unacknowledged before JetStream redelivers it
    #: (also how long a crashed worker's in-flight batch waits before another replica gets it).
    ack_wait_s: PositiveFloat = 5.0
    #: Stream size cap in bytes (-1: no cap; the nats-server's own limits still apply).
    max_bytes: Annotated[int, msgspec.Meta(ge=-1)] = -1


class AuthConfig(_Section):
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


class GatewayConfig(_Section):
    """WebSocket and REST front door."""

    #: Address the HTTP/WebSocket server binds.
    host: str = "127.0.0.1"
    #: Port of the HTTP/WebSocket server (0 picks a free one).
    port: Port = 8080
    #: Names this gateway in logs, metrics, envelopes and presence; must be unique per
    #: running process. Default: ``gw-<port>-<random>``.
    id: str = ""
    #: Largest frame (and REST body) accepted; larger frames close the socket with 1009.
    #: At most 900 KiB so an envelope fits NATS's default 1 MiB max_payload.
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=900 * 1024)] = 64 * 1024
    #: Frames queued for one socket before it is closed as a slow consumer (4008).
    send_queue: Annotated[int, msgspec.Meta(ge=8, le=100_000)] = 1024
    #: WebSocket ping interval; a socket that does not answer is closed.
    heartbeat_s: PositiveFloat = 20.0
    #: Per-connection token bucket: sustained frames per second and burst.
    rate_per_s: PositiveFloat = 200.0
    #: Burst of the per-connection token bucket.
    rate_burst: Positive = 400
    #: Rate-limited or invalid frames in a row before the socket is closed (4009).
    max_strikes: Positive = 50
    #: On shutdown, how long to wait for closed sockets' handlers to finish.
    drain_timeout_s: PositiveFloat = 10.0
    #: A gateway refreshes its presence beat every third of this; when it dies, its devices
    #: count as offline for everyone after at most this long.
    presence_ttl_s: Annotated[float, msgspec.Meta(ge=1.0, le=300.0)] = 10.0
    #: Backlog page size when a device syncs.
    sync_page: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500


class StoreConfig(_Section):
    """The message store owned by the storage worker."""

    #: Store implementation.
    backend: Literal["sqlite", "cassandra"] = "sqlite"
    #: SQLite database file (embedded mode).
    sqlite_path: str = ".data/courier.db"
    #: Messages per transaction when the worker catches up.
    batch: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 500
    #: How long a sync waits for the worker to store what was accepted before it.
    barrier_timeout_s: PositiveFloat = 10.0


class RetentionConfig(_Section):
    """What is kept, per app. Apps not named use ``default_days``."""

    #: Days messages are kept, for apps without their own entry in ``days``.
    default_days: Positive = 30
    #: Apps whose messages are deleted once every recipient device has acknowledged them.
    ephemeral_apps: list[str] = []
    #: ``app=days`` pairs overriding ``default_days``.
    days: dict[str, int] = {}
    #: How often the storage worker applies retention.
    purge_interval_s: PositiveFloat = 60.0


class LogConfig(_Section):
    """Structured logs on stderr."""

    #: Lowest level logged.
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: JSON lines for machines, or aligned text for people.
    format: Literal["json", "console"] = "json"


class MetricsConfig(_Section):
    """Prometheus exposition for services without an HTTP server of their own."""

    #: Address the workers' metrics servers bind.
    host: str = "127.0.0.1"
    #: Router metrics port (0 picks a free one; the chosen port is logged).
    router_port: Port = 9101
    #: Storage worker metrics port (0 picks a free one).
    storage_port: Port = 9102


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The whole configuration tree."""

    app: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")] = "default"
    nats: NatsConfig = NatsConfig()
    auth: AuthConfig = AuthConfig()
    gateway: GatewayConfig = GatewayConfig()
    store: StoreConfig = StoreConfig()
    retention: RetentionConfig = RetentionConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()


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
    if config.auth.algorithm == "HS256" and config.auth.public_key_file:
        raise ConfigError("COURIER_AUTH_ALGORITHM: HS256 uses a secret, not a public key file")
    if config.auth.algorithm == "HS256" and 0 < len(config.auth.secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"COURIER_AUTH_SECRET: at least {MIN_SECRET_BYTES} bytes for HS256")
    for app, days in config.retention.days.items():
        if days <= 0:
            raise ConfigError(f"COURIER_RETENTION_DAYS: days for {app!r} must be positive")


def load_config_or_exit() -> Config:
    """``load_config`` for a process ``main``: a bad value prints its key and exits with 2."""
    try:
        return load_config()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
