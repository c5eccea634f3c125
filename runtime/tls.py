"""Client-side TLS contexts for the connections a service opens (NATS, Cassandra)."""

import ssl


def client_context(ca_file: str, cert_file: str, key_file: str, verify: bool) -> ssl.SSLContext:
    """Trust ``ca_file`` (empty: the system's CAs), present ``cert_file``/``key_file`` if set,
    and verify the server's certificate and host name unless ``verify`` is off."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
