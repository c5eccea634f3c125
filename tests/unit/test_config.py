"""Configuration: typed, validated at start, errors that name the key."""

from pathlib import Path

import pytest

from runtime.config import ConfigError, load_config


def test_defaults_are_valid() -> None:
    config = load_config({})
    assert config.gateway.port == 8080 and config.store.backend == "sqlite"


def test_environment_overrides_and_parsing() -> None:
    config = load_config({
        "COURIER_GATEWAY_PORT": "9000",
        "COURIER_GATEWAY_HEARTBEAT_S": "2.5",
        "COURIER_AUTH_DEV_REGISTRATION": "true",
        "COURIER_RETENTION_EPHEMERAL_APPS": "a, b",
        "COURIER_RETENTION_DAYS": "a=3,b=7",
        "COURIER_APP": "shop",
    })
    assert config.gateway.port == 9000 and config.gateway.heartbeat_s == 2.5
    assert config.auth.dev_registration is True
    assert config.retention.ephemeral_apps == ["a", "b"]
    assert config.retention.days == {"a": 3, "b": 7}
    assert config.app == "shop"


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "courier.toml"
    path.write_text('[gateway]\nport = 7000\nsend_queue = 64\n[store]\nbackend = "sqlite"\n')
    config = load_config({"COURIER_CONFIG": str(path), "COURIER_GATEWAY_PORT": "7001"})
    assert (config.gateway.port, config.gateway.send_queue) == (7001, 64)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"COURIER_GATEWAY_PORT": "abc"}, "COURIER_GATEWAY_PORT"),
        ({"COURIER_GATEWAY_PORT": "70000"}, "COURIER_GATEWAY_PORT"),
        ({"COURIER_GATEWAY_PORTT": "1"}, "COURIER_GATEWAY_PORTT"),
        ({"COURIER_NOPE_X": "1"}, "COURIER_NOPE_X"),
        ({"COURIER_STORE_BACKEND": "oracle"}, "COURIER_STORE_BACKEND"),
        ({"COURIER_AUTH_DEV_REGISTRATION": "maybe"}, "COURIER_AUTH_DEV_REGISTRATION"),
        ({"COURIER_RETENTION_DAYS": "a"}, "COURIER_RETENTION_DAYS"),
        ({"COURIER_RETENTION_DAYS": "a=0"}, "COURIER_RETENTION_DAYS"),
        ({"COURIER_AUTH_SECRET": "short"}, "COURIER_AUTH_SECRET"),
        ({"COURIER_AUTH_PUBLIC_KEY_FILE": "/no/such/file"}, "COURIER_AUTH_PUBLIC_KEY_FILE"),
        ({"COURIER_APP": "bad app"}, "COURIER_APP"),
        ({"COURIER_CONFIG": "/no/such.toml"}, "COURIER_CONFIG"),
        ({"COURIER_GROUPS_MAX_MEMBERS": "1"}, "COURIER_GROUPS_MAX_MEMBERS"),
        ({"COURIER_CONTACTS_STRANGERS": "nobody"}, "COURIER_CONTACTS_STRANGERS"),
        ({"COURIER_CONTACTS_STRANGERS_BY_APP": "shop=maybe"},
         "COURIER_CONTACTS_STRANGERS_BY_APP"),
        ({"COURIER_PRESENCE_TYPING_PER_S": "0"}, "COURIER_PRESENCE_TYPING_PER_S"),
        ({"COURIER_STORE_RPC_CONCURRENCY": "0"}, "COURIER_STORE_RPC_CONCURRENCY"),
        ({"COURIER_STORE_RPC_CONCURRENCY": "10001"}, "COURIER_STORE_RPC_CONCURRENCY"),
        ({"COURIER_STORE_RPC_CONCURRENCY": "many"}, "COURIER_STORE_RPC_CONCURRENCY"),
        ({"COURIER_KEYS_LOW_WATER": "-1"}, "COURIER_KEYS_LOW_WATER"),
        ({"COURIER_KEYS_LOW_WATER": "101"}, "COURIER_KEYS_LOW_WATER"),
        ({"COURIER_KEYS_LOW_WATER": "few"}, "COURIER_KEYS_LOW_WATER"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert str(info.value).startswith(key), str(info.value)


@pytest.mark.parametrize("value", [1, 10_000])
def test_rpc_concurrency_bounds_are_accepted(value: int) -> None:
    config = load_config({"COURIER_STORE_RPC_CONCURRENCY": str(value)})
    assert config.store.rpc_concurrency == value


@pytest.mark.parametrize("value", [0, 100])
def test_keys_low_water_bounds_are_accepted(value: int) -> None:
    assert load_config({"COURIER_KEYS_LOW_WATER": str(value)}).keys.low_water == value


def test_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gateway\n")
    with pytest.raises(ConfigError, match="COURIER_CONFIG"):
        load_config({"COURIER_CONFIG": str(path)})
    path.write_text("[gateway]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config({"COURIER_CONFIG": str(path)})


def test_readme_configuration_table_is_current() -> None:
    from runtime.configdoc import END, START, table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    current = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert current == table(), "run `.venv/bin/python -m runtime.configdoc README.md`"


def test_stranger_policy_per_app() -> None:
    config = load_config({"COURIER_CONTACTS_STRANGERS": "contacts_only",
                          "COURIER_CONTACTS_STRANGERS_BY_APP": "open=allow"})
    assert config.contacts.strangers_for("open") == "allow"
    assert config.contacts.strangers_for("other") == "contacts_only"


def test_dead_letter_settings_at_their_bounds() -> None:
    low = load_config({"COURIER_DLQ_ATTEMPTS": "1", "COURIER_DLQ_RETRY_S": "0.01",
                       "COURIER_DLQ_MAX_AGE_DAYS": "1"}).dlq
    high = load_config({"COURIER_DLQ_ATTEMPTS": "20", "COURIER_DLQ_RETRY_S": "5",
                        "COURIER_DLQ_MAX_AGE_DAYS": "3650"}).dlq
    assert (low.attempts, low.retry_s, low.max_age_days) == (1, 0.01, 1)
    assert (high.attempts, high.retry_s, high.max_age_days) == (20, 5.0, 3650)


@pytest.mark.parametrize(("key", "value"), [
    ("COURIER_DLQ_ATTEMPTS", "0"), ("COURIER_DLQ_ATTEMPTS", "21"),
    ("COURIER_DLQ_ATTEMPTS", "three"), ("COURIER_DLQ_RETRY_S", "0.001"),
    ("COURIER_DLQ_RETRY_S", "5.5"), ("COURIER_DLQ_MAX_AGE_DAYS", "0"),
    ("COURIER_DLQ_MAX_AGE_DAYS", "3651"), ("COURIER_DLQ_SIZE", "1"),
])
def test_bad_dead_letter_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({key: value})
    assert key in str(info.value)


@pytest.mark.parametrize("value", ["0", "0.05", "3601", "x", "nan"])
def test_recipient_cache_bounds(value: str) -> None:
    with pytest.raises(ConfigError, match="COURIER_GATEWAY_RECIPIENT_CACHE_S"):
        load_config({"COURIER_GATEWAY_RECIPIENT_CACHE_S": value,
                     "COURIER_AUTH_SECRET": "s" * 32})


@pytest.mark.parametrize("value", ["0.1", "3600"])
def test_recipient_cache_at_the_bounds(value: str) -> None:
    config = load_config({"COURIER_GATEWAY_RECIPIENT_CACHE_S": value,
                          "COURIER_AUTH_SECRET": "s" * 32})
    assert config.gateway.recipient_cache_s == float(value)


#: The archive's numeric settings: (key, lowest, highest) accepted.
ARCHIVE_BOUNDS = [
    ("COURIER_ARCHIVE_DEFAULT_AGE_DAYS", "1", "36500"),
    ("COURIER_ARCHIVE_INTERVAL_S", "1", "86400"),
    ("COURIER_ARCHIVE_CHUNK_MESSAGES", "1", "10000"),
    ("COURIER_ARCHIVE_CHUNK_BYTES", "1024", str(256 * 1024**2)),
    ("COURIER_ARCHIVE_CACHE_CHUNKS", "1", "10000"),
    ("COURIER_METRICS_ARCHIVE_PORT", "0", "65535"),
]


@pytest.mark.parametrize(("key", "low", "high"), ARCHIVE_BOUNDS)
def test_archive_settings_at_their_bounds(key: str, low: str, high: str) -> None:
    for value in (low, high):
        load_config({key: value})


@pytest.mark.parametrize(("key", "value"), [
    *((key, str(int(float(low)) - 1)) for key, low, _ in ARCHIVE_BOUNDS),
    *((key, str(int(float(high)) + 1)) for key, _, high in ARCHIVE_BOUNDS),
    ("COURIER_ARCHIVE_INTERVAL_S", "0.99"), ("COURIER_ARCHIVE_CHUNK_MESSAGES", "many"),
    ("COURIER_ARCHIVE_ENABLED", "maybe"),
    ("COURIER_ARCHIVE_AGE_DAYS", "shop=0"), ("COURIER_ARCHIVE_AGE_DAYS", "shop=36501"),
    ("COURIER_ARCHIVE_AGE_DAYS", "shop"),
])
def test_bad_archive_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({key: value})
    assert str(info.value).startswith(key), str(info.value)


def test_archive_age_per_app() -> None:
    config = load_config({"COURIER_ARCHIVE_AGE_DAYS": "shop=1,news=36500",
                          "COURIER_ARCHIVE_ENABLED": "false"})
    assert config.archive.age_days == {"shop": 1, "news": 36500}
    assert config.archive.enabled is False


#: The router's last-hop settings: (key, lowest, highest) accepted.
ROUTER_BOUNDS = [
    ("COURIER_ROUTER_EDGE_BATCH_BYTES", str(4 * 1024), str(64 * 1024**2)),
    ("COURIER_ROUTER_ROUTES_PER_PARTITION", "1", "10000000"),
]


@pytest.mark.parametrize(("key", "low", "high"), ROUTER_BOUNDS)
def test_router_settings_at_their_bounds(key: str, low: str, high: str) -> None:
    field = key.removeprefix("COURIER_ROUTER_").lower()
    for value in (low, high):
        assert getattr(load_config({key: value}).router, field) == int(value)


@pytest.mark.parametrize(("key", "value"), [
    *((key, str(int(low) - 1)) for key, low, _ in ROUTER_BOUNDS),
    *((key, str(int(high) + 1)) for key, _, high in ROUTER_BOUNDS),
    ("COURIER_ROUTER_EDGE_BATCH_BYTES", "big"), ("COURIER_ROUTER_ROUTES_PER_PARTITION", "1.5"),
])
def test_bad_router_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({key: value})
    assert str(info.value).startswith(key), str(info.value)


@pytest.mark.parametrize("value", ["", "g", "gw-8080_a1", "g" * 64])
def test_gateway_ids_that_are_one_subject_token(value: str) -> None:
    assert load_config({"COURIER_GATEWAY_ID": value}).gateway.id == value


@pytest.mark.parametrize("value", ["g" * 65, "gw.1", "gw-*", "gw>", "gw 1", "gw/1"])
def test_gateway_ids_that_are_not_one_subject_token_are_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"COURIER_GATEWAY_ID": value})
    assert str(info.value).startswith("COURIER_GATEWAY_ID"), str(info.value)
