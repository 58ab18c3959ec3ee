"""Benchmark: opsagent against restic on the same data, in the same run.

Generates a deterministic data set (default 1 GiB: many small documents, media-like
incompressible files, one large text dump), then times both tools into local
repositories and into the same S3 server (moto over HTTP): first full backup, a
second backup after changing 5 % of the files, a full restore, and a check that
reads all data. Records wall time and peak RSS of each command and prints a
Markdown table with the ratios (opsagent / restic: below 1 is better).

    .venv/bin/python bench/backup_vs_restic.py [--size-mib 1024] [--no-s3] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402

PASSWORD = "bench-password-not-secret"


@dataclass
class Timing:
    seconds: float
    rss_mib: float


def run(argv: list[str], env: dict[str, str] | None = None) -> Timing:
    """Run a command; wall time and the peak RSS of that one child (wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"{' '.join(argv[:4])}... exited {code}: {err.strip()[-500:]}")
    return Timing(seconds, usage.ru_maxrss / 1024)


def make_data(root: Path, size_mib: int, seed: int = 42) -> None:
    """About 30 % small documents, 50 % incompressible media, 20 % one text dump."""
    rng = random.Random(seed)
    docs_budget = size_mib * 2**20 * 30 // 100
    media_budget = size_mib * 2**20 * 50 // 100
    dump_budget = size_mib * 2**20 - docs_budget - media_budget
    words = [f"word{n}" for n in range(5000)]
    written, n = 0, 0
    while written < docs_budget:
        folder = root / "documents" / f"client-{n % 97:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(2_000, 120_000)
        text = " ".join(rng.choice(words) for _ in range(size // 7))[:size]
        (folder / f"doc-{n:06d}.txt").write_text(text)
        written += len(text)
        n += 1
    media = root / "media"
    media.mkdir(parents=True)
    written, n = 0, 0
    while written < media_budget:
        size = min(rng.randint(1, 24) * 2**20, media_budget - written)
        (media / f"photo-{n:04d}.jpg").write_bytes(rng.randbytes(size))
        written += size
        n += 1
    with open(root / "dump.sql", "w") as handle:
        written, row = 0, 0
        while written < dump_budget:
            line = (
                f"INSERT INTO invoices VALUES ({row}, 'client-{row % 997}', {row * 7 % 100003});\n"
            )
            handle.write(line)
            written += len(line)
            row += 1


def change_five_percent(root: Path, seed: int = 7) -> None:
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in rng.sample(files, max(1, len(files) // 20)):
        data = bytearray(path.read_bytes())
        if data:
            at = rng.randrange(len(data))
            data[at : at + 64] = rng.randbytes(64)
        path.write_bytes(bytes(data))


def opsagent_config(work: Path, repository: str, data: Path, s3: str = "") -> Path:
    key = work / "opsagent.key"
    key.write_text(PASSWORD + "\n")
    key.chmod(0o600)
    config = work / f"opsagent-{abs(hash(repository))}.yml"
    config.write_text(
        f"""
host: bench
state_dir: {work / "state"}
backup:
  repository: "{repository}"
  password_file: {key}
  {s3}
  sources: [{{name: data, kind: files, paths: ["{data}"]}}]
"""
    )
    return config


def bench_pair(
    label: str,
    work: Path,
    data: Path,
    opsagent_repo: str,
    restic_repo: str,
    env: dict[str, str],
    s3_block: str,
) -> list[tuple[str, Timing, Timing]]:
    opsagent = [str(ROOT / ".venv" / "bin" / "opsagent")]
    config = opsagent_config(work, opsagent_repo, data, s3_block)
    ops = [*opsagent, "--log-level", "warning"]
    restic = ["restic", "-r", restic_repo, "--quiet"]
    run([*ops, "backup", "init", "--config", str(config)], env)
    run([*restic, "init"], env)
    rows = []
    rows.append(
        (
            f"{label}: first backup",
            run([*ops, "backup", "run", "--config", str(config)], env),
            run([*restic, "backup", str(data)], env),
        )
    )
    change_five_percent(data)
    rows.append(
        (
            f"{label}: second backup (5 % of files changed)",
            run([*ops, "backup", "run", "--config", str(config)], env),
            run([*restic, "backup", str(data)], env),
        )
    )
    out_a, out_b = work / f"restore-ops-{label}", work / f"restore-restic-{label}"
    rows.append(
        (
            f"{label}: full restore",
            run([*ops, "restore", "latest", "--to", str(out_a), "--config", str(config)], env),
            run([*restic, "restore", "latest", "--target", str(out_b)], env),
        )
    )
    shutil.rmtree(out_a, ignore_errors=True)
    shutil.rmtree(out_b, ignore_errors=True)
    rows.append(
        (
            f"{label}: check, reading all data",
            run([*ops, "backup", "check", "--read-data", "--config", str(config)], env),
            run([*restic, "check", "--read-data"], env),
        )
    )
    return rows


def table(rows: list[tuple[str, Timing, Timing]], size_mib: int) -> str:
    lines = [
        f"Data set: {size_mib} MiB (30 % documents, 50 % incompressible media, 20 % text dump).",
        "",
        "| step | opsagent s | restic s | time ratio | opsagent RSS MiB | restic RSS MiB |"
        " RSS ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ops, restic in rows:
        lines.append(
            f"| {name} | {ops.seconds:.2f} | {restic.seconds:.2f} |"
            f" {ops.seconds / restic.seconds:.2f} | {ops.rss_mib:.0f} | {restic.rss_mib:.0f} |"
            f" {ops.rss_mib / restic.rss_mib:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed (apt-get install restic)")
    with tempfile.TemporaryDirectory(prefix="opsagent-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "RESTIC_PASSWORD": PASSWORD}
        print(f"generating {args.size_mib} MiB ...", file=sys.stderr)
        source = work / "source"
        make_data(source, args.size_mib)
        rows = []
        data = work / "data-local"
        shutil.copytree(source, data, symlinks=True)
        rows += bench_pair(
            "local", work, data, str(work / "repo-ops"), str(work / "repo-restic"), env, ""
        )
        if not args.no_s3:
            s3 = services.start_s3(work)
            try:
                client = s3.client()
                client.create_bucket(Bucket="bench-ops")
                client.create_bucket(Bucket="bench-restic")
                s3_env = {
                    **env,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "OPSAGENT_BENCH_AK": "testing",
                    "OPSAGENT_BENCH_SK": "testing",
                }
                block = (
                    f"s3: {{endpoint_url: '{s3.endpoint_url}', path_style: true,"
                    " access_key_id: '${OPSAGENT_BENCH_AK}',"
                    " secret_access_key: '${OPSAGENT_BENCH_SK}'}"
                )
                data = work / "data-s3"
                shutil.rmtree(work / "data-local")
                shutil.copytree(source, data, symlinks=True)
                rows += bench_pair(
                    "s3",
                    work,
                    data,
                    "s3://bench-ops/repo",
                    f"s3:{s3.endpoint_url}/bench-restic",
                    s3_env,
                    block,
                )
            finally:
                s3.process.stop()
        report = table(rows, args.size_mib)
        print(report)
        if args.out:
            args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
