"""Benchmark: opsagent against restic and BorgBackup on the same data, in the same run.

Generates a deterministic data set, then times every tool into local repositories
(opsagent, restic, borg) and into the same S3 server, moto over HTTP (opsagent,
restic; borg has no S3 backend): first full backup, a second backup after changing
5 % of the files, a backup with nothing changed, a full restore, and a check that
reads all data. Records wall time and peak RSS of each command and prints Markdown
tables with the ratios against the best peer on each row (below 1 is better) and
against each peer; `--json` (default: next to `--out`) keeps every raw number.

Data sets (`--profile`):
- `mixed` (default): 30 % small documents, 50 % incompressible media, 20 % one text
  dump;
- `small-files`: `--small-files N` files (default 200,000) in a tree of `--dirs`
  directories (default N / 100), log-normal sizes summing to `--size-mib`, about half
  the bytes compressible text; walking and comparing dominate.

`--cold` drops the page cache (as root) before every tool's timed command, so no tool
reads what the one before it just read: without it the tools take turns in one order
(opsagent first), and each peer's incremental backup and restore find the files, or
the directory entries, the previous tool left in memory.

    .venv/bin/python bench/backup_vs_restic.py [--size-mib 1024] [--only local|s3]
        [--profile mixed|small-files] [--small-files N] [--cold] [--out FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402

PASSWORD = "bench-password-not-secret"
PEERS = ("restic", "borg")


@dataclass
class Timing:
    seconds: float
    rss_mib: float


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
COLD = False  # --cold: the page cache dropped before every timed command (`cold_start`)


def cold_start() -> None:
    """With --cold, the page cache, directory entries and inodes dropped (after a sync,
    so dirty pages go too): every tool starts from the disk, as a nightly backup does."""
    if COLD:
        os.sync()
        DROP_CACHES.write_text("3\n")


def run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timing:
    """Run a command; wall time and the peak RSS of that one child.

    The peak comes from GNU time, which forks the command from its own 1 MiB process:
    a child forked straight from this (larger) Python process would report at least
    this process's RSS, since Linux keeps the high-water mark across exec.

    Dirty pages are written out first: otherwise the command would pay for writing
    back what ran before it (the data set just generated or copied, the previous
    tool's repository) while it reads and writes its own: the first tool of the first
    step, opsagent, was timed while the kernel wrote out the data set just made.
    """
    os.sync()
    with tempfile.NamedTemporaryFile() as errors, tempfile.NamedTemporaryFile("r") as peak:
        measured = [GNU_TIME, "-f", "%M", "-o", peak.name, "--", *argv] if GNU_TIME else argv
        start = time.perf_counter()
        proc = subprocess.Popen(
            measured,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            stdin=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            errors.seek(0)
            err = errors.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(argv[:4])}... exited {code}: {err.strip()[-500:]}")
        kib = int(peak.read().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return Timing(seconds, kib / 1024)


def output(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """A command's first line of output, or '?' when it fails (versions, commits)."""
    try:
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return (done.stdout.strip().splitlines() or ["?"])[0]


# --- data sets ------------------------------------------------------------------------


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


SEGMENT = 16 * 2**10
POOL = 32 * 2**20


def text_pool(rng: random.Random, size: int) -> bytes:
    """Compressible text (words, numbers, line breaks) to slice file contents from."""
    words = [f"word{n}" for n in range(5000)] + ["\n"] * 400 + [str(n) for n in range(600)]
    text = " ".join(rng.choices(words, k=size // 6)).encode()
    return (text * (size // len(text) + 1))[:size]


def small_file_tree(dirs: int) -> list[str]:
    """Directory paths of a realistic tree: leaves 20 to a parent, parents 20 to a top."""
    return [
        f"area-{leaf // 400:03d}/project-{leaf // 20:04d}/dir-{leaf:05d}" for leaf in range(dirs)
    ]


def make_small_files(root: Path, size_mib: int, count: int, dirs: int, seed: int = 42) -> None:
    """`count` files in `dirs` directories, log-normal sizes summing to `size_mib`.

    Contents are 16 KiB slices of two reused buffers (random bytes and text) at random
    offsets: unique per file, about half the bytes compressible, and fast to write.
    """
    rng = random.Random(seed)
    noise = memoryview(rng.randbytes(POOL))
    text = memoryview(text_pool(rng, POOL))
    leaves = small_file_tree(dirs)
    for leaf in leaves:
        (root / leaf).mkdir(parents=True, exist_ok=True)
    # Some directories hold many files, most a few (Pareto weights).
    homes = rng.choices(range(dirs), weights=[rng.paretovariate(1.2) for _ in leaves], k=count)
    weights = [rng.lognormvariate(0.0, 1.6) for _ in range(count)]
    total = size_mib * 2**20
    scale = total / sum(weights)
    sizes = [int(w * scale) for w in weights]
    sizes[-1] += total - sum(sizes)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for n, (home, size) in enumerate(zip(homes, sizes, strict=True)):
        text_share = rng.choice((0.0, 0.5, 0.8, 1.0))
        pieces = []
        left = size
        while left > 0:
            take = min(SEGMENT, left)
            pool = text if rng.random() < text_share else noise
            at = rng.randrange(POOL - take)
            pieces.append(pool[at : at + take])
            left -= take
        suffix = ".txt" if text_share == 1.0 else ".dat"
        fd = os.open(root / leaves[home] / f"file-{n:07d}{suffix}", flags, 0o644)
        try:
            for start in range(0, len(pieces), 512):
                os.writev(fd, pieces[start : start + 512])
        finally:
            os.close(fd)


def regular_files(root: Path) -> list[str]:
    """Relative paths of the regular files under root, in pathlib's sort order."""
    found = []
    for folder, _, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(name if rel == "." else os.path.join(rel, name))
    return sorted(found, key=lambda p: p.split(os.sep))


def change_five_percent(root: Path, seed: int = 7) -> None:
    """Overwrite 64 bytes at a random place in 5 % of the files, in place (no full read)."""
    rng = random.Random(seed)
    files = regular_files(root)
    for rel in rng.sample(files, max(1, len(files) // 20)):
        path = root / rel
        size = path.stat().st_size
        if size:
            at = rng.randrange(size)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, rng.randbytes(64), at)
            finally:
                os.close(fd)
        else:
            os.utime(path)


@dataclass
class Tally:
    files: int
    bytes: int


def tally(root: Path) -> Tally:
    """Regular files and their bytes under root, to check a restore brought back all."""
    files = total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(folder, name))
            if st.st_mode & 0o170000 == 0o100000:
                files += 1
                total += st.st_size
    return Tally(files, total)


# --- tools ----------------------------------------------------------------------------


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


class Tool:
    """One backup program: init, backup, restore into a directory, check all data."""

    name = ""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def init(self) -> None:
        raise NotImplementedError

    def backup(self) -> Timing:
        raise NotImplementedError

    def restore(self, target: Path) -> Timing:
        raise NotImplementedError

    def check(self) -> Timing:
        raise NotImplementedError


class Opsagent(Tool):
    name = "opsagent"

    def __init__(self, env: dict[str, str], work: Path, repo: str, data: Path, s3: str) -> None:
        super().__init__(env)
        config = opsagent_config(work, repo, data, s3)
        # this checkout's code (the venv's console script may point at another one)
        python = str(ROOT / ".venv" / "bin" / "python")
        self.argv = [python, "-m", "agents", "--log-level", "warning"]
        self.config = ["--config", str(config)]

    def init(self) -> None:
        run([*self.argv, "backup", "init", *self.config], self.env)

    def backup(self) -> Timing:
        return run([*self.argv, "backup", "run", *self.config], self.env)

    def restore(self, target: Path) -> Timing:
        return run([*self.argv, "restore", "latest", "--to", str(target), *self.config], self.env)

    def check(self) -> Timing:
        return run([*self.argv, "backup", "check", "--read-data", *self.config], self.env)


class Restic(Tool):
    name = "restic"

    def __init__(self, env: dict[str, str], repo: str, data: Path) -> None:
        super().__init__({**env, "RESTIC_PASSWORD": PASSWORD})
        self.argv = ["restic", "-r", repo, "--quiet"]
        self.data = data

    def init(self) -> None:
        run([*self.argv, "init"], self.env)

    def backup(self) -> Timing:
        return run([*self.argv, "backup", str(self.data)], self.env)

    def restore(self, target: Path) -> Timing:
        return run([*self.argv, "restore", "latest", "--target", str(target)], self.env)

    def check(self) -> Timing:
        return run([*self.argv, "check", "--read-data"], self.env)


class Borg(Tool):
    """BorgBackup 1.2: encrypted (repokey-blake2), zstd level 3 like opsagent's default."""

    name = "borg"

    def __init__(self, env: dict[str, str], work: Path, repo: Path, data: Path) -> None:
        home = work / "borg-home"
        super().__init__(
            {
                **env,
                "BORG_PASSPHRASE": PASSWORD,
                "BORG_BASE_DIR": str(home),
                "BORG_CONFIG_DIR": str(home / "config"),
                "BORG_CACHE_DIR": str(home / "cache"),
                "BORG_SECURITY_DIR": str(home / "security"),
                "BORG_KEYS_DIR": str(home / "keys"),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                "BORG_DISPLAY_PASSPHRASE": "no",
            }
        )
        self.repo = str(repo)
        self.data = data
        self.archives = 0

    def init(self) -> None:
        run(["borg", "init", "--encryption=repokey-blake2", self.repo], self.env)

    def backup(self) -> Timing:
        self.archives += 1
        archive = f"{self.repo}::snapshot-{self.archives}"
        return run(["borg", "create", "--compression", "zstd,3", archive, str(self.data)], self.env)

    def restore(self, target: Path) -> Timing:
        # borg stores paths without the leading slash and extracts into the working directory.
        target.mkdir(parents=True)
        archive = f"{self.repo}::snapshot-{self.archives}"
        return run(["borg", "extract", archive], self.env, cwd=target)

    def check(self) -> Timing:
        return run(["borg", "check", "--verify-data", self.repo], self.env)


# --- the run --------------------------------------------------------------------------


@dataclass
class Row:
    location: str
    step: str
    timings: dict[str, Timing]
    restored: dict[str, Tally] = field(default_factory=dict)

    def best(self, attribute: str) -> float:
        """The smallest seconds or RSS among the peers measured on this row."""
        return min(getattr(t, attribute) for name, t in self.timings.items() if name in PEERS)


def progress(name: str, timing: Timing) -> None:
    """One tool's figures as they come, so a run cut short still tells something."""
    print(f"  {name}: {timing.seconds:.2f} s, {timing.rss_mib:.0f} MiB", file=sys.stderr)


def bench_location(location: str, work: Path, data: Path, tools: list[Tool]) -> list[Row]:
    """All steps for every tool into one kind of repository, tools in turn on each step."""
    for tool in tools:
        tool.init()

    def step(name: str, action: str) -> Row:
        print(f"{location}: {name} ...", file=sys.stderr)
        timings = {}
        for tool in tools:
            cold_start()
            timings[tool.name] = getattr(tool, action)()
            progress(tool.name, timings[tool.name])
        return Row(location, name, timings)

    rows = [step("first backup", "backup")]
    change_five_percent(data)
    rows.append(step("second backup (5 % of files changed)", "backup"))
    rows.append(step("backup again, nothing changed", "backup"))
    expected = tally(data)
    row = Row(location, "full restore", {})
    print(f"{location}: full restore ...", file=sys.stderr)
    for tool in tools:
        target = work / f"restore-{tool.name}-{location}"
        cold_start()
        row.timings[tool.name] = tool.restore(target)
        row.restored[tool.name] = got = tally(target)
        progress(tool.name, row.timings[tool.name])
        if got != expected:
            print(f"  WARNING: {tool.name} restored {got}, expected {expected}", file=sys.stderr)
        shutil.rmtree(target, ignore_errors=True)
    rows.append(row)
    rows.append(step("check, reading all data", "check"))
    return rows


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 else "—"


def table(rows: list[Row], described: str) -> str:
    """Times and RSS of every tool, ratios against the best peer, then against each peer."""
    lines = [
        f"Data set: {described}.",
        "",
        "| step | opsagent s | restic s | borg s | time ratio vs best |"
        " opsagent RSS MiB | restic RSS MiB | borg RSS MiB | RSS ratio vs best |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = row.timings
        ops = t["opsagent"]
        secs = " | ".join(f"{t[p].seconds:.2f}" if p in t else "—" for p in PEERS)
        rss = " | ".join(f"{t[p].rss_mib:.0f}" if p in t else "—" for p in PEERS)
        lines.append(
            f"| {row.location}: {row.step} | {ops.seconds:.2f} | {secs} |"
            f" {ratio(ops.seconds, row.best('seconds'))} | {ops.rss_mib:.0f} | {rss} |"
            f" {ratio(ops.rss_mib, row.best('rss_mib'))} |"
        )
    lines += [
        "",
        "| step | time vs restic | time vs borg | RSS vs restic | RSS vs borg |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = row.timings
        ops = t["opsagent"]
        times = [ratio(ops.seconds, t[p].seconds) if p in t else "—" for p in PEERS]
        rss = [ratio(ops.rss_mib, t[p].rss_mib) if p in t else "—" for p in PEERS]
        lines.append(f"| {row.location}: {row.step} | {' | '.join(times + rss)} |")
    return "\n".join(lines)


def describe(args: argparse.Namespace, files: Tally) -> str:
    if args.profile == "mixed":
        kind = "30 % documents, 50 % incompressible media, 20 % text dump"
    else:
        kind = f"small files in {args.dirs} directories, log-normal sizes, about half text"
    cache = "; page cache dropped before every command" if args.cold else ""
    return f"{args.size_mib} MiB, {files.files} files ({kind}){cache}"


def environment(env: dict[str, str], work: Path, borg: bool) -> dict[str, str]:
    """Versions, the commit of the opsagent code that runs, and the machine."""
    interpreter = (ROOT / ".venv" / "bin" / "opsagent").read_text().splitlines()[0][2:]
    agents = output([interpreter, "-c", "import agents; print(agents.__file__)"], env, work)
    tree = Path(agents).parent.parent if agents != "?" else ROOT
    commit = output(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"])
    engine = output(["git", "-C", str(tree), "log", "-1", "--format=%h", "--", "agents"])
    status = ["git", "-C", str(tree), "status", "--porcelain", "--", "agents"]
    dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "opsagent_code": f"{tree} at {commit}, agents/ last changed in {engine}"
        + (" (and modified since)" if dirty else ""),
        "restic": output(["restic", "version"]),
        "borg": output(["borg", "--version"]) if borg else "not run",
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}",
    }


def installed_like(env: dict[str, str]) -> dict[str, str]:
    """The environment of an installed opsagent: this checkout's code on the path, its
    bytecode compiled once now (pip compiles at install; PYTHONDONTWRITEBYTECODE in a
    developer's shell would otherwise make every command compile its modules again)."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "compileall", "-q", "agents", "exporters"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--profile", choices=("mixed", "small-files"), default=None)
    parser.add_argument(
        "--small-files",
        type=int,
        default=None,
        metavar="N",
        help="file count of the small-files profile (default 200000)",
    )
    parser.add_argument("--dirs", type=int, default=None, help="directories (default N / 100)")
    parser.add_argument("--only", choices=("local", "s3"), default=None)
    parser.add_argument("--no-s3", action="store_true", help="the same as --only local")
    parser.add_argument("--no-borg", action="store_true", help="skip BorgBackup")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before every tool's timed command (root)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown tables here")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write every raw number here (default: --out with .json)",
    )
    args = parser.parse_args()
    if args.cold:
        if not os.access(DROP_CACHES, os.W_OK):
            raise SystemExit(f"--cold needs to write {DROP_CACHES} (run as root)")
        global COLD
        COLD = True
    if args.profile is None:
        args.profile = "small-files" if args.small_files else "mixed"
    if args.profile == "small-files":
        args.small_files = args.small_files or 200_000
        args.dirs = args.dirs or max(1, args.small_files // 100)
    locations = ["local", "s3"]
    if args.no_s3 or args.only == "local":
        locations = ["local"]
    elif args.only == "s3":
        locations = ["s3"]
    json_path = args.json or (args.out.with_suffix(".json") if args.out else None)
    if GNU_TIME is None:
        print(
            "warning: GNU time (/usr/bin/time, apt-get install time) is missing; peak RSS"
            " of a peer below this process's own RSS reads as this process's RSS",
            file=sys.stderr,
        )
    if shutil.which("restic") is None:
        raise SystemExit(
            "restic is not installed: apt-get install restic (or scripts/bench-peers.sh)"
        )
    borg = "local" in locations and not args.no_borg
    if borg and shutil.which("borg") is None:
        raise SystemExit(
            "borg is not installed: apt-get install borgbackup (or scripts/bench-peers.sh),"
            " or pass --no-borg to compare with restic alone"
        )
    with tempfile.TemporaryDirectory(prefix="opsagent-bench-") as tmp:
        work = Path(tmp)
        env = installed_like(dict(os.environ))
        facts = environment(env, work, borg)
        source = work / "source"
        print(f"generating {args.size_mib} MiB ({args.profile}) ...", file=sys.stderr)
        started = time.perf_counter()
        if args.profile == "mixed":
            make_data(source, args.size_mib)
        else:
            make_small_files(source, args.size_mib, args.small_files, args.dirs)
        files = tally(source)
        print(f"  {files.files} files in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        rows: list[Row] = []
        for n, location in enumerate(locations):
            data = work / f"data-{location}"
            if n == len(locations) - 1:
                source.rename(data)
            else:
                shutil.copytree(source, data, symlinks=True)
            if location == "local":
                tools: list[Tool] = [
                    Opsagent(env, work, str(work / "repo-ops"), data, ""),
                    Restic(env, str(work / "repo-restic"), data),
                ]
                if borg:
                    tools.append(Borg(env, work, work / "repo-borg", data))
                rows += bench_location(location, work, data, tools)
            else:
                rows += bench_s3(work, data, env)
            if n < len(locations) - 1:
                shutil.rmtree(data, ignore_errors=True)  # room for the next copy
        described = describe(args, files)
        report = table(rows, described)
        heading = ", ".join(f"{k}: {v}" for k, v in facts.items())
        print(f"{heading}\n\n{report}")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(f"{heading}\n\n{report}\n")
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            document = {
                **facts,
                "arguments": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                },
                "data_set": {"description": described, **asdict(files)},
                "rows": [asdict(row) for row in rows],
            }
            json_path.write_text(json.dumps(document, indent=2) + "\n")


def bench_s3(work: Path, data: Path, env: dict[str, str]) -> list[Row]:
    """opsagent and restic into buckets of the same moto S3 server (borg has no S3)."""
    s3 = services.start_s3(work)
    try:
        return bench_location("s3", work, data, s3_tools(s3, env, work, data))
    finally:
        s3.process.stop()


def s3_tools(s3: services.S3Server, env: dict[str, str], work: Path, data: Path) -> list[Tool]:
    """opsagent and restic, each with its bucket made on the S3 server and its
    credentials in the environment (opsagent's through `${VAR}` in its config)."""
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
    return [
        Opsagent(s3_env, work, "s3://bench-ops/repo", data, block),
        Restic(s3_env, f"s3:{s3.endpoint_url}/bench-restic", data),
    ]


if __name__ == "__main__":
    main()
