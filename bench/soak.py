"""The long soak: `opsagent run` for --minutes (30 by default) with 50 checks every second,
a backup and a restore test every --job-every seconds against S3 (moto) through the fault
proxy, 200 concurrent scrapes during a backup. Samples RSS, open files, threads and the
state database every --sample-every seconds, fits a line after warm-up, and fails (exit 1)
when a resource grows faster than its limit, a scheduled run was missed, a check went
silent or a result was lost. Writes the figures into docs/reliability.md.

    .venv/bin/python bench/soak.py --minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.chaos import report  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.soak import as_dict, run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-every", type=float, default=60.0)
    parser.add_argument("--job-every", type=float, default=180.0)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--json", help="Also write every sample to this file.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opsagent-soak-"))
    s3 = services.start_s3(work)
    bucket = f"soak-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=bucket)
    try:
        outcome = run_soak(
            work / "agent",
            s3.port,
            bucket,
            s3.access_key,
            s3.secret_key,
            duration=args.minutes * 60,
            sample_every=min(args.sample_every, args.minutes * 60 / 10),
            job_every=args.job_every,
            fault_rate=args.fault_rate,
        )
    finally:
        s3.process.stop()
    summary = outcome.summary()
    print("| minute | RSS MiB | open files | threads | state KiB |")
    print("|---|---|---|---|---|")
    for sample in outcome.samples:
        print(
            f"| {sample.seconds / 60:.1f} | {sample.rss_bytes / 2**20:.1f} | {sample.open_fds}"
            f" | {sample.threads} | {sample.state_bytes / 1024:.0f} |"
        )
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(as_dict(outcome), indent=2))
    report.record("soak", summary | {"kind": f"bench/soak.py, {args.minutes:g} minutes"})
    report.write()
    return 1 if outcome.problems else 0


if __name__ == "__main__":
    sys.exit(main())
