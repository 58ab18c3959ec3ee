"""A short soak in the suite (bench/soak.py runs the long one): the daemon for a minute
with 50 checks every second, backups and restore tests every 15 s through the fault
proxy, 200 concurrent scrapes during a backup; no resource grows without bound, no run
missed, no check silent, no result lost."""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos import report
from tests.support.services import S3Server
from tests.support.soak import Limits, run_soak

DURATION = float(os.environ.get("OPSAGENT_SOAK_SECONDS", "60"))


def test_short_soak(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    outcome = run_soak(
        tmp_path,
        s3_server.port,
        s3_bucket,
        s3_server.access_key,
        s3_server.secret_key,
        duration=DURATION,
        sample_every=2.0,
        job_every=15.0,
        # a minute is short for a slope: these catch a leak per run, not slow drift
        limits=Limits(rss_bytes=30 * 2**20, open_fds=30, threads=10, state_bytes=8 * 2**20),
    )
    report.record("soak", outcome.summary() | {"kind": "short soak in the suite"})
    assert outcome.problems == [], outcome.problems
