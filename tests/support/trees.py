"""Generated file trees for backup tests, and a comparable fingerprint of a tree."""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path


def make_tree(root: Path, small_files: int = 2000, large_mib: int = 6, seed: int = 1) -> None:
    """Thousands of small files, a few large ones, empty files, deep paths,
    unicode names, symlinks, compressible and incompressible data, varied modes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(small_files):
        folder = root / "docs" / f"d{i % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = f"document {i}\n" + "lorem ipsum dolor sit amet " * rng.randint(0, 200)
        (folder / f"doc-{i:05d}.txt").write_text(body)
    media = root / "media"
    media.mkdir()
    (media / "random.bin").write_bytes(rng.randbytes(large_mib * 2**20))
    text = "".join(f"{n},customer-{n % 977},{n * 31 % 10007}\n" for n in range(200_000))
    (media / "dump.csv").write_text(text)
    (root / "empty").mkdir()
    for i in range(3):
        (root / "empty" / f"zero-{i}").write_bytes(b"")
    deep = root
    for level in range(25):
        deep = deep / f"level-{level}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("deep down\n")
    unicode_dir = root / "unicodé ✓ 文件"
    unicode_dir.mkdir()
    (unicode_dir / "naïve café ☕.txt").write_text("unicode content ✓\n")
    (root / "links").mkdir()
    os.symlink("../docs/d00/doc-00000.txt", root / "links" / "relative")
    os.symlink("/etc/hostname", root / "links" / "absolute")
    os.symlink("does-not-exist", root / "links" / "dangling")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    secret = root / "private.txt"
    secret.write_text("only me\n")
    secret.chmod(0o600)
    for n, path in enumerate(sorted(root.rglob("*"))):
        if not path.is_symlink():
            os.utime(path, ns=(1_600_000_000_000_000_000 + n * 10**9,) * 2)


def fingerprint(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (type, mode, mtime_ns, content hash or link target) for every object."""
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
    return out
