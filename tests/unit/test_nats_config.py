"""NATS credential and TLS configuration: ``COURIER_NATS_NKEY_SEED_FILE`` and
``COURIER_NATS_TLS_*``, validated at start with errors that name the key."""

import os
from pathlib import Path

import nkeys
import pytest

from infra.nats_auth import new_seed
from runtime.config import ConfigError, load_config
from runtime.natsconn import tls_context

SEED_KEY = "COURIER_NATS_NKEY_SEED_FILE"


def test_a_user_seed_file_is_accepted(tmp_path: Path) -> None:
    seed = tmp_path / "router.nk"
    seed.write_bytes(new_seed() + b"\n")
    assert load_config({SEED_KEY: str(seed)}).nats.nkey_seed_file == str(seed)
    assert load_config({}).nats.nkey_seed_file == ""  # no credential: anonymous


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot read"),
    (b"", "not an nkey seed"),
    (b"SU" + b"A" * 10, "not an nkey seed"),
    (b"hello world", "not an nkey seed"),
    (nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT), "not a user nkey seed"),
    (nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_SERVER), "not a user nkey seed"),
], ids=["missing", "empty", "short", "text", "account seed", "server seed"])  # stable ids:
# pytest-xdist workers must collect the same names, and these seeds are random
def test_a_bad_or_missing_seed_file_names_the_key(tmp_path: Path, content: bytes | None,
                                                  reason: str) -> None:
    seed = tmp_path / "seed.nk"
    if content is not None:
        seed.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config({SEED_KEY: str(seed)})
    assert str(info.value).startswith(SEED_KEY) and reason in str(info.value), str(info.value)


def test_a_directory_is_not_a_seed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=SEED_KEY):
        load_config({SEED_KEY: str(tmp_path)})


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("pem")
    return {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key")}


def test_tls_keys(pem_files: dict[str, str]) -> None:
    nats = load_config({"COURIER_NATS_TLS": "true", "COURIER_NATS_TLS_CA_FILE": pem_files["ca"],
                        "COURIER_NATS_TLS_CERT_FILE": pem_files["cert"],
                        "COURIER_NATS_TLS_KEY_FILE": pem_files["key"],
                        "COURIER_NATS_TLS_VERIFY": "false"}).nats
    assert nats.uses_tls and not nats.tls_verify
    implied = load_config({"COURIER_NATS_URL": "nats://a:4222, tls://b:4222",
                           "COURIER_NATS_TLS_VERIFY": "false"}).nats
    assert implied.uses_tls and not implied.tls
    context = tls_context(implied)
    assert context is not None and not context.check_hostname
    assert tls_context(load_config({}).nats) is None


@pytest.mark.parametrize(("env", "key"), [
    ({"COURIER_NATS_TLS": "maybe"}, "COURIER_NATS_TLS"),
    ({"COURIER_NATS_TLS_VERIFY": "2"}, "COURIER_NATS_TLS_VERIFY"),
    ({"COURIER_NATS_TLS_CA_FILE": "{ca}"}, "COURIER_NATS_TLS:"),
    ({"COURIER_NATS_TLS": "true", "COURIER_NATS_TLS_CA_FILE": "/no/such.pem"},
     "COURIER_NATS_TLS_CA_FILE"),
    ({"COURIER_NATS_TLS": "true", "COURIER_NATS_TLS_CERT_FILE": "{cert}"},
     "COURIER_NATS_TLS_KEY_FILE"),
    ({"COURIER_NATS_URL": "tls://a:4222", "COURIER_NATS_TLS_KEY_FILE": "{key}"},
     "COURIER_NATS_TLS_CERT_FILE"),
])
def test_bad_tls_values_name_the_key(pem_files: dict[str, str], env: dict[str, str],
                                     key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({name: value.format(**pem_files) for name, value in env.items()})
    assert str(info.value).startswith(key), str(info.value)


def test_a_comma_separated_url_names_every_server_of_a_cluster() -> None:
    nats = load_config({"COURIER_NATS_URL": "nats://a:4222, nats://b:4223,nats://c:4224,"}).nats
    assert nats.servers == ["nats://a:4222", "nats://b:4223", "nats://c:4224"]
    assert load_config({}).nats.servers == ["nats://127.0.0.1:4222"]


@pytest.mark.parametrize("url", ["", " ", ", ,"])
def test_a_url_without_a_server_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="COURIER_NATS_URL: no server URL"):
        load_config({"COURIER_NATS_URL": url})
