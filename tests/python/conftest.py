"""pytest fixtures: a shared demo server, a TLS one, and a signed-in ADBC connection (all
built on harness.py)."""

from __future__ import annotations

import os
import tempfile

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, SCALE, Server


@pytest.fixture(scope="session")
def server():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["demo", "--scale", SCALE], os.path.join(tmp, "data"))
        yield s
        s.stop()


@pytest.fixture(scope="module")
def tls_server():
    """A server with TLS on Flight SQL (the ADBC driver sends OAuth tokens only over TLS),
    with a certificate from a throwaway CA: (server, the CA's PEM, the path of that PEM)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        cert.cert_chain_pems[0].write_to_path(cert_path)
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(cert_path, append=True)
        cert.private_key_pem.write_to_path(key_path)
        ca_path = os.path.join(tmp, "ca.pem")
        ca.cert_pem.write_to_path(ca_path)
        config = f"server:\n  tls:\n    cert: {cert_path}\n    key: {key_path}\n"
        s = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), config=config)
        try:
            yield s, ca.cert_pem.bytes().decode(), ca_path
        finally:
            s.stop()


@pytest.fixture
def conn(server):
    import adbc_driver_flightsql.dbapi as flight_sql

    c = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    yield c
    c.close()


@pytest.fixture
def no_pyarrow_signal_handling():
    """pyarrow turns a CANCELLED status into a simulated Ctrl-C of the main thread (it takes
    it for its own SIGINT handling); a test that cancels on purpose ignores SIGINT meanwhile."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)
