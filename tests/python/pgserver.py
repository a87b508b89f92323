"""A throwaway PostgreSQL cluster from Debian's package, on a free port (tests and benches)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg

PASSWORD = "pg-s3cret-Xy9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A throwaway cluster that can be stopped and started again on the same port."""

    def __init__(self, server_cert=None, log_statements=False):
        """`server_cert`, a `trustme` leaf certificate, makes the server speak TLS with it;
        `log_statements` logs every statement the server receives (read with `log()`)."""
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bindirs:
            raise RuntimeError("PostgreSQL is not installed: `make postgres` installs Debian's package")
        self.bindir = bindirs[-1]
        self.tmp = tempfile.mkdtemp()
        self.as_user: list[str] = []
        pwfile = os.path.join(self.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            pg = pwd.getpwnam("postgres")
            os.chown(self.tmp, pg.pw_uid, pg.pw_gid)
            os.chown(pwfile, pg.pw_uid, pg.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.tmp, "data")
        subprocess.run([*self.as_user, f"{self.bindir}/initdb", "-D", self.data, "-U", "quiver",
                        "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True)
        self.tls: list[str] = []
        if server_cert is not None:
            cert, key = os.path.join(self.tmp, "server.crt"), os.path.join(self.tmp, "server.key")
            server_cert.cert_chain_pems[0].write_to_path(cert)
            for pem in server_cert.cert_chain_pems[1:]:
                pem.write_to_path(cert, append=True)
            server_cert.private_key_pem.write_to_path(key)
            os.chmod(key, 0o600)  # PostgreSQL refuses a key others can read
            if self.as_user:
                for path in (cert, key):
                    os.chown(path, pg.pw_uid, pg.pw_gid)
            self.tls = ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]
        self.log_path = os.path.join(self.tmp, "postgres.log")
        self.logging = ["-c", "log_statement=all"] if log_statements else []
        self.port = free_port()
        self.settings = {"host": "127.0.0.1", "port": self.port, "user": "quiver", "password": PASSWORD,
                         "dbname": "postgres"}
        self.proc: subprocess.Popen | None = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.as_user, f"{self.bindir}/postgres", "-D", self.data, "-p",
                                          str(self.port), "-k", self.tmp, "-c", "listen_addresses=127.0.0.1",
                                          "-c", "fsync=off", *self.tls, *self.logging],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 60
        while True:
            try:
                psycopg.connect(**self.settings).close()
                return
            except psycopg.OperationalError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.2)

    def log(self) -> str:
        """What the server has logged so far."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def remove(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster(server_cert=None, log_statements=False):
    """Yields a started PostgresCluster; removes it afterwards."""
    cluster = PostgresCluster(server_cert, log_statements)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextlib.contextmanager
def postgres_server():
    """Yields psycopg connection settings of a fresh cluster; removes it afterwards."""
    with postgres_cluster() as cluster:
        yield cluster.settings
