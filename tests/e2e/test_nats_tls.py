"""NATS over TLS: a real nats-server with a certificate from a CA made by the test, requiring
client certificates (mutual TLS) and the generated credentials; services connect with the
``COURIER_NATS_TLS_*`` keys."""

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.nats_auth import NatsCredentials
from infra.nats_server import NatsServer, ServerTls
from runtime.config import load_config
from runtime.natsconn import close, connect, tls_context


class Pki:
    """A CA and the certificates it signed, as PEM files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "courier test CA")])
        self._name = name
        self.ca_file = self._write("ca.pem", self._build(name, self._key.public_key(), ca=True))

    def issue(self, stem: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
        certificate = self._build(subject, key.public_key(), ca=False, server=server)
        key_file = self.directory / f"{stem}.key"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return self._write(f"{stem}.pem", certificate), key_file

    def _build(self, subject: x509.Name, public_key: Any, *, ca: bool,
               server: bool = False) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def _write(self, name: str, certificate: x509.Certificate) -> Path:
        path = self.directory / name
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return path


@pytest.fixture(scope="module")
def tls_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsServer, Pki,
                                                                       NatsCredentials]]:
    root = tmp_path_factory.mktemp("natstls")
    pki = Pki(root)
    cert, key = pki.issue("nats-server", server=True)
    credentials = NatsCredentials.ensure(root / "nats-auth")
    server = NatsServer(root / "nats", authorization=credentials.authorization(),
                        tls=ServerTls(cert, key, ca_file=pki.ca_file))
    with server:
        yield server, pki, credentials


def nats_env(server: NatsServer, credentials: NatsCredentials, **keys: str) -> dict[str, str]:
    return {"COURIER_NATS_URL": server.url, **credentials.env("gateway"),
            **{f"COURIER_NATS_{key.upper()}": value for key, value in keys.items()}}


async def test_a_service_connects_with_its_ca_and_client_certificate(
        tls_bus: tuple[NatsServer, Pki, NatsCredentials]) -> None:
    server, pki, credentials = tls_bus
    assert server.url.startswith("tls://")
    cert, key = pki.issue("gateway", server=False)
    config = load_config(nats_env(server, credentials, tls_ca_file=str(pki.ca_file),
                                  tls_cert_file=str(cert), tls_key_file=str(key))).nats
    nc = await connect(config, "gateway-tls-test", "gateway")
    try:
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            await received.put(msg.data)

        await nc.subscribe("usr.gw-tls", cb=on_msg)
        await nc.publish("usr.gw-tls", b"over tls")
        assert await asyncio.wait_for(received.get(), 10) == b"over tls"
    finally:
        await close(nc)


async def refusal(server: NatsServer, credentials: NatsCredentials, **keys: str) -> Exception:
    """The error of one connection attempt with these ``COURIER_NATS_TLS_*`` keys."""
    config = load_config(nats_env(server, credentials, **keys)).nats

    async def quiet(exc: Exception) -> None:
        pass

    client = nats.NATS()
    try:
        with pytest.raises(Exception) as refused:
            await client.connect(server.url, tls=tls_context(config), allow_reconnect=False,
                                 nkeys_seed=config.nkey_seed_file, connect_timeout=5,
                                 error_cb=quiet)
    finally:  # nats-py may wait forever for a transport whose TLS handshake failed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await client.close()
    return refused.value


async def test_without_a_client_certificate_the_server_refuses(
        tls_bus: tuple[NatsServer, Pki, NatsCredentials]) -> None:
    server, pki, credentials = tls_bus
    error = await refusal(server, credentials, tls_ca_file=str(pki.ca_file))
    assert isinstance(error, ssl.SSLError | ConnectionError | nats.errors.Error), repr(error)


async def test_a_server_certificate_from_an_unknown_ca_is_refused(
        tls_bus: tuple[NatsServer, Pki, NatsCredentials]) -> None:
    server, pki, credentials = tls_bus
    cert, key = pki.issue("gateway-2", server=False)
    error = await refusal(server, credentials, tls="true", tls_cert_file=str(cert),
                          tls_key_file=str(key))  # the system's CAs do not know ours
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
