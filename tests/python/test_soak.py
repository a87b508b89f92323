"""A short soak (the long one is `benches/soak.py`): well-behaved clients of every kind see no
error while an attacker sends the statements that used to crash or stall the server; the
server neither dies nor keeps the memory it used."""

from __future__ import annotations

import os
import tempfile

from harness import Server
from workload import run_soak


def test_a_short_soak_with_an_attacker():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                        config="query:\n  memory_limit: 512 MiB\n  memory_limit_per_user: 128 MiB\n")
        try:
            report = run_soak(server, clients=12, seconds=20)
        finally:
            server.stop()
    print(report.summary())
    assert not report.crashed, report.summary()
    assert report.errors == [], report.errors[:5]
    assert report.attacks > 0 and report.attack_failures == [], report.attack_failures[:5]
    assert len(report.lookups) > 50
    assert report.rss_peak < 512 * 1024 * 1024 + report.rss_before, report.summary()
