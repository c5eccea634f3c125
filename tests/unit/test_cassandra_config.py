"""Cassandra settings of the store: parsed, validated at start, errors that name the key."""

from pathlib import Path

import pytest

from runtime.config import ConfigError, load_config, parse_contact_point, parse_replication


def test_defaults_and_environment() -> None:
    store = load_config({}).store
    assert store.cassandra_contact_points == ["127.0.0.1:9042"]
    assert (store.cassandra_keyspace, store.cassandra_consistency) == ("courier", "LOCAL_QUORUM")
    store = load_config({
        "COURIER_STORE_BACKEND": "cassandra",
        "COURIER_STORE_CASSANDRA_CONTACT_POINTS": "10.0.0.1:9142, 10.0.0.2",
        "COURIER_STORE_CASSANDRA_KEYSPACE": "chat_prod",
        "COURIER_STORE_CASSANDRA_REPLICATION": "eu:3,us:3",
        "COURIER_STORE_CASSANDRA_CONSISTENCY": "QUORUM",
        "COURIER_STORE_CASSANDRA_USERNAME": "courier",
        "COURIER_STORE_CASSANDRA_PASSWORD": "secret",
        "COURIER_STORE_CASSANDRA_REQUEST_TIMEOUT_S": "2.5",
        "COURIER_STORE_CASSANDRA_CREATE_KEYSPACE": "false",
    }).store
    assert store.cassandra_contact_points == ["10.0.0.1:9142", "10.0.0.2"]
    assert store.cassandra_keyspace == "chat_prod"
    assert store.cassandra_consistency == "QUORUM"
    assert store.cassandra_request_timeout_s == 2.5
    assert store.cassandra_create_keyspace is False


def test_tls_files(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("pem")
    store = load_config({
        "COURIER_STORE_CASSANDRA_TLS": "true",
        "COURIER_STORE_CASSANDRA_TLS_CA_FILE": str(tmp_path / "ca.pem"),
        "COURIER_STORE_CASSANDRA_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "COURIER_STORE_CASSANDRA_TLS_KEY_FILE": str(tmp_path / "key.pem"),
        "COURIER_STORE_CASSANDRA_TLS_VERIFY": "false",
    }).store
    assert store.cassandra_tls and not store.cassandra_tls_verify


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"COURIER_STORE_CASSANDRA_CONTACT_POINTS": ","}, "CONTACT_POINTS"),
        ({"COURIER_STORE_CASSANDRA_CONTACT_POINTS": "host:port"}, "CONTACT_POINTS"),
        ({"COURIER_STORE_CASSANDRA_CONTACT_POINTS": "a:9042,b:70000"}, "CONTACT_POINTS"),
        ({"COURIER_STORE_CASSANDRA_CONTACT_POINTS": ":9042"}, "CONTACT_POINTS"),
        ({"COURIER_STORE_CASSANDRA_CONTACT_POINTS": "[::1:9042"}, "CONTACT_POINTS"),
        ({"COURIER_STORE_CASSANDRA_KEYSPACE": "Courier"}, "KEYSPACE"),
        ({"COURIER_STORE_CASSANDRA_KEYSPACE": "drop table;"}, "KEYSPACE"),
        ({"COURIER_STORE_CASSANDRA_KEYSPACE": "k" * 49}, "KEYSPACE"),
        ({"COURIER_STORE_CASSANDRA_CREATE_KEYSPACE": "perhaps"}, "CREATE_KEYSPACE"),
        ({"COURIER_STORE_CASSANDRA_REPLICATION": "SimpleStrategy"}, "REPLICATION"),
        ({"COURIER_STORE_CASSANDRA_REPLICATION": "SimpleStrategy:0"}, "REPLICATION"),
        ({"COURIER_STORE_CASSANDRA_REPLICATION": "SimpleStrategy:1,dc2:3"}, "REPLICATION"),
        ({"COURIER_STORE_CASSANDRA_REPLICATION": "dc1:3,dc1:2"}, "REPLICATION"),
        ({"COURIER_STORE_CASSANDRA_REPLICATION": "dc1:three"}, "REPLICATION"),
        ({"COURIER_STORE_CASSANDRA_REPLICATION": "dc'1:3"}, "REPLICATION"),
        ({"COURIER_STORE_CASSANDRA_CONSISTENCY": "local_quorum"}, "CONSISTENCY"),
        ({"COURIER_STORE_CASSANDRA_CONSISTENCY": "ANY"}, "CONSISTENCY"),
        ({"COURIER_STORE_CASSANDRA_USERNAME": "courier"}, "PASSWORD"),
        ({"COURIER_STORE_CASSANDRA_PASSWORD": "secret"}, "USERNAME"),
        ({"COURIER_STORE_CASSANDRA_TLS_CA_FILE": "/no/such/ca.pem"}, "TLS"),
        ({"COURIER_STORE_CASSANDRA_TLS": "true",
          "COURIER_STORE_CASSANDRA_TLS_CA_FILE": "/no/such/ca.pem"}, "TLS_CA_FILE"),
        ({"COURIER_STORE_CASSANDRA_TLS": "yes please"}, "TLS"),
        ({"COURIER_STORE_CASSANDRA_TLS_VERIFY": "2"}, "TLS_VERIFY"),
        ({"COURIER_STORE_CASSANDRA_REQUEST_TIMEOUT_S": "0"}, "REQUEST_TIMEOUT_S"),
        ({"COURIER_STORE_CASSANDRA_REQUEST_TIMEOUT_S": "soon"}, "REQUEST_TIMEOUT_S"),
        ({"COURIER_STORE_CASSANDRA_PORT": "9042"}, "PORT"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert str(info.value).startswith(f"COURIER_STORE_CASSANDRA_{key}:"), str(info.value)


def test_client_certificate_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("pem")
    with pytest.raises(ConfigError, match=r"^COURIER_STORE_CASSANDRA_TLS_KEY_FILE:"):
        load_config({"COURIER_STORE_CASSANDRA_TLS": "true",
                     "COURIER_STORE_CASSANDRA_TLS_CERT_FILE": str(cert)})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db1", ("db1", 9042)),
        ("db1:9142", ("db1", 9142)),
        ("10.0.0.7:9042", ("10.0.0.7", 9042)),
        ("[::1]:9043", ("::1", 9043)),
        ("[fe80::1]", ("fe80::1", 9042)),
    ],
)
def test_contact_points(value: str, expected: tuple[str, int]) -> None:
    assert parse_contact_point(value) == expected


def test_replication() -> None:
    assert parse_replication("SimpleStrategy:3") == {
        "class": "SimpleStrategy", "replication_factor": "3"}
    assert parse_replication("eu-west:3, us_east:2") == {
        "class": "NetworkTopologyStrategy", "eu-west": "3", "us_east": "2"}
