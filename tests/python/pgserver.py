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


@contextlib.contextmanager
def postgres_server():
    """Yields psycopg connection settings of a fresh cluster; removes it afterwards."""
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs:
        raise RuntimeError("PostgreSQL is not installed: `make postgres` installs Debian's package")
    bindir = bindirs[-1]
    tmp = tempfile.mkdtemp()
    as_user: list[str] = []
    pwfile = os.path.join(tmp, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        pg = pwd.getpwnam("postgres")
        os.chown(tmp, pg.pw_uid, pg.pw_gid)
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(tmp, "data")
    subprocess.run([*as_user, f"{bindir}/initdb", "-D", data, "-U", "quiver", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([*as_user, f"{bindir}/postgres", "-D", data, "-p", str(port), "-k", tmp,
                             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = {"host": "127.0.0.1", "port": port, "user": "quiver", "password": PASSWORD,
                "dbname": "postgres"}
    try:
        deadline = time.time() + 60
        while True:
            try:
                psycopg.connect(**settings).close()
                break
            except psycopg.OperationalError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
