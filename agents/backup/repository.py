"""The repository: content-addressed, deduplicated, compressed and encrypted.

Objects on the storage backend:

    config                 plain JSON: format version, repository ID, chunker sizes
    keys/<id>              the master key wrapped by a password-derived key (one per key)
    data/<xx>/<pack id>    packs of sealed blobs (file chunks and tree chunks)
    index/<id>             sealed index files: blob -> pack, offset, length
    snapshots/<id>         sealed snapshot manifests
    locks/<id>             lock objects

Commit order is packs, then index, then snapshot: a crash at any point leaves no
visible partial snapshot, only packs no snapshot references (prune removes them).
Index files are also written every few packs during a long backup, so a killed run's
uploads are reused by the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import zstandard
from pyfastcdc import FastCDC

from agents.backup.cache import Kind, ObjectCache
from agents.backup.crypto import Crypto, MasterKey, dumps, unwrap_master_key, wrap_master_key
from agents.backup.errors import BackupError, IntegrityError, NotFound, WrongKey
from agents.backup.index import Index, IndexFile, Location, encode_index, read_index_file
from agents.backup.locks import RepositoryLock
from agents.backup.pack import (
    BlobType,
    FinishedPack,
    PackBuilder,
    PackEntry,
    header_length,
    pack_key,
    read_header,
)
from agents.backup.snapshot import MAX_MANIFEST_BYTES, Snapshot, TreeEntry, decode_tree_line
from agents.backup.storage import ObjectKind, Storage
from agents.backup.unlock import Found, open_any_key

log = logging.getLogger("opsagent.backup")

REPOSITORY_VERSION = 1
# FastCDC's mean chunk is avg + min: about 1 MiB for files, 8 KiB for database dumps,
# where day-to-day changes are scattered rows and small chunks keep them small.
CHUNK_MIN, CHUNK_AVG, CHUNK_MAX = 256 * 1024, 768 * 1024, 4 * 2**20
DUMP_CHUNK_MIN, DUMP_CHUNK_AVG, DUMP_CHUNK_MAX = 2 * 1024, 6 * 1024, 32 * 1024
# which of the two chunk sizes a stream is cut with: file contents, or database dumps
ChunkKind = Literal["files", "dumps"]
_CHUNK_SIZES: dict[str, tuple[int, int, int]] = {
    "files": (CHUNK_MIN, CHUNK_AVG, CHUNK_MAX),
    "dumps": (DUMP_CHUNK_MIN, DUMP_CHUNK_AVG, DUMP_CHUNK_MAX),
}
INDEX_EVERY_PACKS = 8
GET_MANY = 8  # index files or snapshots read at once
UPLOAD_SLOTS = 2  # finished packs waiting for or in upload
# blobs up to SMALL_BLOB are sealed in batches of about BATCH_BYTES on a pool thread, one
# zstd call a batch (see BlobWriter); larger blobs one by one
SMALL_BLOB = 64 * 1024
BATCH_BYTES = 512 * 1024
BATCH_BLOBS = 256
_RAW, _ZSTD = b"\x00", b"\x01"
Blob = bytes | memoryview  # a blob's bytes, or a read-only view of a file read whole
_SNAPSHOT_ASSOCIATED = b"opsagent-snapshot"
_MAX_BLOB = 64 * 2**20
_PACK_NAME = re.compile(r"[0-9a-f]{64}")
_HEADER_PROBE = 64 * 1024  # one GET reads most pack headers with the tail before them


@dataclass(frozen=True)
class WriteStats:
    blobs_new: int = 0
    blobs_reused: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    packs: int = 0


class SnapshotGone(BackupError):
    """The snapshot object does not exist (any more)."""


@dataclass
class ReconcileReport:
    """What `Repository.reconcile` found: packs in storage, index files it ignored, packs
    it indexed from their headers, packs whose header does not open."""

    stored: dict[str, int]
    damaged_index: dict[str, str]
    recovered_packs: list[str] = field(default_factory=list)
    unreadable_packs: dict[str, str] = field(default_factory=dict)


class Repository:
    """An opened repository: a backend plus the unwrapped master key."""

    def __init__(self, storage: Storage, crypto: Crypto, info: dict[str, Any]) -> None:
        self.storage = storage
        self.crypto = crypto
        self.info = info
        self.lock_wait = 0.0  # seconds to wait for a conflicting lock (backup.lock_wait)
        self.key_id = ""  # the key file (keys/<id>) that opened this repository
        self.index = Index()
        self.index_files: dict[str, list[str]] = {}  # index files in force -> their packs
        self.all_index_files: list[str] = []  # every index file seen, superseded or not
        self.damaged_index: dict[str, str] = {}  # index files that did not open -> why
        self.damaged_snapshots: dict[str, str] = {}  # snapshots that did not open -> why
        self.mentioned_packs: set[str] = set()  # packs any index file names
        self.foreign_objects: list[str] = []  # objects under data/ that are not packs
        # what the last listings of data/ and snapshots/ found, plus what this process
        # wrote since: a backup's closing figures without listing again (None: not listed)
        self.listed_packs: dict[str, int] | None = None
        self.listed_snapshots: set[str] | None = None
        self._snapshots_ahead: Future[_SnapshotListing] | None = None
        # a local copy of index files, snapshots and trees (S3; see cache.py), or None
        self.cache: ObjectCache | None = None
        self._listed_sizes: dict[str, int] = {}  # "index/<name>" -> size, as last listed
        self._index_loaded = False
        self._dctx = threading.local()

    # --- create and open ---------------------------------------------------------------

    @classmethod
    def init(cls, storage: Storage, password: str, host: str, user: str) -> Repository:
        """Create a new repository; refuses to touch an existing one."""
        if _exists(storage, "config"):
            raise BackupError(
                f"a repository already exists at {storage.url}; refusing to overwrite"
            )
        if not password:
            raise BackupError("the repository password is empty")
        # the config is written last: keys without it are an init that was killed, which
        # this one finishes when the password opens one of them
        unfinished = open_any_key(storage, password)
        if unfinished is None and any(True for _ in storage.list("keys/")):
            raise BackupError(
                f"{storage.url} holds repository keys this password does not open;"
                " refusing to overwrite"
            )
        if unfinished is not None:
            key_id, master = unfinished
        else:
            master = MasterKey.generate()
            keyfile = wrap_master_key(master, password, host, user)
            key_id = secrets.token_hex(16)
            storage.put(f"keys/{key_id}", json.dumps(keyfile).encode())
        info = {
            "version": REPOSITORY_VERSION,
            "id": secrets.token_hex(16),
            "created": datetime.now(UTC).isoformat(),
            "chunker": {
                "files": {"min": CHUNK_MIN, "avg": CHUNK_AVG, "max": CHUNK_MAX},
                "dumps": {"min": DUMP_CHUNK_MIN, "avg": DUMP_CHUNK_AVG, "max": DUMP_CHUNK_MAX},
            },
        }
        storage.put("config", json.dumps(info, indent=2).encode())
        repo = cls(storage, Crypto(master), info)
        repo.key_id = key_id
        return repo

    @classmethod
    def open(
        cls, storage: Storage, password: str, unlocking: Future[Found] | None = None
    ) -> Repository:
        """Open with a password; raises WrongKey when no key file opens with it.

        `unlocking` is the key search `unlock.begin` already started for this storage
        and password (its errors are raised here, after the repository's own)."""
        try:
            info = json.loads(storage.get("config"))
        except NotFound:
            raise BackupError(
                f"no repository at {storage.url} (create one with `opsagent backup init`)"
            ) from None
        except ValueError:
            raise IntegrityError(f"{storage.url}: repository config is not valid JSON") from None
        version = int(info.get("version", 0))
        if version > REPOSITORY_VERSION:
            raise BackupError(
                f"repository format {version} is newer than this agent understands "
                f"({REPOSITORY_VERSION}); upgrade opsagent"
            )
        found = unlocking.result() if unlocking is not None else open_any_key(storage, password)
        if found is None:
            if not any(True for _ in storage.list("keys/")):
                raise BackupError(f"{storage.url}: repository has no key files")
            raise WrongKey(f"{storage.url}: wrong password: no repository key opens with it")
        key_id, master = found
        repo = cls(storage, Crypto(master), info)
        repo.key_id = key_id
        return repo

    @classmethod
    def from_master(cls, storage: Storage, master: MasterKey) -> Repository:
        """Open with the master key itself (escrow), proven by decrypting the repository's
        own objects: a key that opens nothing is refused."""
        try:
            info = json.loads(storage.get("config"))
        except NotFound:
            raise BackupError(f"no repository at {storage.url}") from None
        repo = cls(storage, Crypto(master), info)
        for snapshot_key in storage.list("snapshots/"):
            try:
                repo.crypto.open(storage.get(snapshot_key.key), _SNAPSHOT_ASSOCIATED, "snapshot")
            except IntegrityError:
                raise WrongKey(
                    f"{storage.url}: this master key does not open the repository"
                ) from None
            break
        return repo

    # --- keys: several wrapped copies of one master key ----------------------------------

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key file: id, created, host, user, label, and whether it opened this one."""
        found = []
        for info in self.storage.list("keys/"):
            key_id = info.key.rsplit("/", 1)[-1]
            try:
                body = json.loads(self.storage.get(info.key))
            except (NotFound, ValueError):
                continue
            if not isinstance(body, dict) or "data" not in body:
                continue  # not a key file
            found.append(
                {
                    "id": key_id,
                    "created": body.get("created"),
                    "host": body.get("host"),
                    "user": body.get("user"),
                    "label": body.get("label", ""),
                    "current": key_id == self.key_id,
                }
            )
        return sorted(found, key=lambda k: str(k["created"]))

    def add_key(self, password: str, host: str, user: str, label: str = "") -> str:
        """Wrap the master key with another password; returns the new key's id. The copy
        is read back and opened before this returns, so a bad write is never trusted."""
        if not password:
            raise BackupError("the new password is empty")
        keyfile = wrap_master_key(self.crypto.master, password, host, user)
        keyfile["label"] = label
        key_id = secrets.token_hex(16)
        self.storage.put(f"keys/{key_id}", json.dumps(keyfile).encode())
        check = unwrap_master_key(json.loads(self.storage.get(f"keys/{key_id}")), password)
        if check.to_bytes() != self.crypto.master.to_bytes():
            self.storage.delete([f"keys/{key_id}"])
            raise IntegrityError("the new key file does not open the repository; removed it")
        return key_id

    def remove_key(self, key_id: str) -> str:
        """Remove one key file by id (or unique prefix); never the last one, nor the one in
        use (change it with `passwd`, or open with another key to remove it)."""
        ids = [k["id"] for k in self.list_keys()]
        matches = [k for k in ids if k.startswith(key_id)] if key_id else []
        if not matches and len(key_id) == 32:
            return key_id  # a whole ID that is gone: removed already (by a killed run)
        if len(matches) != 1:
            raise BackupError(
                f"no key {key_id!r}" if not matches else f"key prefix {key_id!r} is ambiguous"
            )
        (target,) = matches
        if len(ids) == 1:
            raise BackupError("this is the repository's last key; it can never be removed")
        if target == self.key_id:
            raise BackupError(
                f"key {target[:8]} is the one in use; open with another key to remove it,"
                " or change its password with `opsagent backup key passwd`"
            )
        self.storage.delete([f"keys/{target}"])
        return target

    # --- blobs -------------------------------------------------------------------------

    def load_index(self, present: set[str] | None = None, refresh: bool = False) -> Index:
        """Read every index file once and merge the ones no other file supersedes.

        Entries for packs that do not exist are always left out (`present`, else a listing
        of `data/`): a blob stored again after its pack was lost is then read from its new
        pack, never looked for in the lost one. A damaged index file is skipped with a
        warning (listed in `damaged_index`) and never stops a backup; what it superseded
        may be back in force, which the same rule makes harmless.
        """
        if self._index_loaded and present is None and not refresh:
            return self.index
        files: dict[str, IndexFile] = {}
        damaged: dict[str, str] = {}
        # a blob is read from a pack that exists, never a lost one: without `present`,
        # data/ is listed, alongside (one round trip, not two before the index reads)
        with ThreadPoolExecutor(1, thread_name_prefix="list") as pool:
            packs = pool.submit(_list_packs, self.storage) if present is None else None
            names, stray = _list_names(self.storage, "index/", self._listed_sizes)
            for name, sealed in self._objects("index", names):
                if sealed is None:
                    continue  # deleted by a prune since the listing
                try:
                    files[name] = read_index_file(self.crypto, sealed, name)
                except IntegrityError as exc:
                    damaged[name] = str(exc)
                    log.warning("%s; ignored (rebuild with `opsagent backup repair index`)", exc)
            if packs is not None:
                present = set(self._took_packs(*packs.result()))
        self._note_foreign(stray)
        superseded = {s for opened in files.values() for s in opened.supersedes}
        self.mentioned_packs = {p for opened in files.values() for p in opened.packs}
        self.index = Index()
        self.index.reserve(sum(f.count for n, f in files.items() if n not in superseded))
        self.index_files = {}
        for name, opened in files.items():
            if name in superseded:
                continue
            self.index_files[name] = list(opened.packs)
            self.index.add_file(opened, present)
        self.all_index_files = names
        self.damaged_index = damaged
        self._index_loaded = True
        return self.index

    def mentioned_packs_in_force(self) -> set[str]:
        """Packs named by the index files in force (before any filter by storage)."""
        return {p for packs in self.index_files.values() for p in packs}

    def stored_packs(self) -> dict[str, int]:
        """Every pack in storage: ID -> size. An object under `data/` that is not named
        like a pack is no pack (`foreign_objects` lists them; nothing deletes them)."""
        return self._took_packs(*_list_packs(self.storage))

    def _took_packs(self, packs: dict[str, int], foreign: list[str]) -> dict[str, int]:
        """A listing of data/ (`_list_packs`) taken in: its foreign objects noted."""
        self.foreign_objects = list(foreign)
        self.listed_packs = dict(packs)
        return packs

    def _note_foreign(self, keys: list[str]) -> None:
        for key in keys:
            if key not in self.foreign_objects:
                self.foreign_objects.append(key)

    def note_pack(self, pack_id: str, size: int) -> None:
        """A pack this process stored (for `repository_bytes`)."""
        if self.listed_packs is not None:
            self.listed_packs[pack_id] = size

    def repository_bytes(self) -> int:
        """Bytes of all packs: as the last listing of data/ found them (a backup lists
        it under its lock when it starts) plus the packs this process stored since; a
        listing when there was none. Another process's writes since then show in the
        next run's figure."""
        packs = self.listed_packs if self.listed_packs is not None else self.stored_packs()
        return sum(packs.values())

    def snapshot_count(self) -> int:
        """Snapshots: as the last listing found them plus the ones saved since (a
        listing when there was none)."""
        if self.listed_snapshots is None:
            self.snapshot_ids()
        return len(self.listed_snapshots or ())

    def reconcile(self, write: bool = True, snapshots_ahead: bool = False) -> ReconcileReport:
        """Make the index match storage before writing: entries for packs that no longer
        exist are dropped (their blobs are stored again if needed, never referenced in
        vain), and packs no index knows (left by a killed backup or prune) are indexed
        from their own headers, so their data is not uploaded again.

        data/ is listed alongside index/; with `snapshots_ahead` (a backup, which reads
        them next) the snapshots are listed and read meanwhile too, for `snapshots`."""
        if snapshots_ahead:
            reader = ThreadPoolExecutor(1, thread_name_prefix="snapshots")
            self._snapshots_ahead = reader.submit(self._read_snapshots)
            reader.shutdown(wait=False)
        try:
            self.load_index(refresh=True)
        except BaseException:
            self._snapshots_ahead = None  # never read later by a command without the lock
            raise
        stored = dict(self.listed_packs or {})
        report = ReconcileReport(stored=stored, damaged_index=dict(self.damaged_index))
        # a pack only a superseded file names is garbage a prune has not yet deleted
        known = self.index.packs() | self.mentioned_packs
        recovered: dict[str, list[PackEntry]] = {}
        for pack_id in sorted(set(stored) - known):
            try:
                recovered[pack_id] = self.read_pack_header(pack_id, stored[pack_id])
            except NotFound:
                continue
            except IntegrityError as exc:
                report.unreadable_packs[pack_id] = str(exc)
                log.warning("%s; left for prune", exc)
        if recovered and write:
            self.write_index(recovered)
        elif recovered:  # a dry run: known in memory only, nothing written
            for pack_id, entries in recovered.items():
                self.index.add_pack(pack_id, entries)
        if recovered:
            report.recovered_packs = sorted(recovered)
            log.info("indexed %d pack(s) left by an interrupted run", len(recovered))
        return report

    def read_pack_header(self, pack_id: str, size: int) -> list[PackEntry]:
        """A pack's blob list from its sealed header, read with one or two ranged GETs."""
        tail_size = min(size, _HEADER_PROBE)
        tail = self.storage.get(pack_key(pack_id), size - tail_size, tail_size)
        need = header_length(tail, pack_id) + 4
        if need > size:
            raise IntegrityError(f"pack {pack_id[:12]} has an impossible header length")
        if need > tail_size:
            tail = self.storage.get(pack_key(pack_id), size - need, need)
        return read_header(self.crypto, tail, pack_id, size)

    def writer(
        self, compression_level: int = 3, pack_size: int = 16 * 2**20, repack: bool = False
    ) -> BlobWriter:
        self.load_index()
        return BlobWriter(self, compression_level, pack_size, repack)

    def chunker_for(self, kind: ChunkKind = "files") -> FastCDC:
        """A chunker that cuts exactly as this repository's backups do (same sizes, same
        key-derived seed): the only place outside the archiver that knows how to chunk."""
        low, avg, high = _CHUNK_SIZES[kind]
        return FastCDC(avg, min_size=low, max_size=high, seed=self.crypto.master.chunker_seed)

    def load_blob(self, blob_id: bytes) -> bytes:
        sealed, pack_id = self._read_sealed(blob_id)
        return self.open_blob(blob_id, sealed, pack_id)

    def _read_sealed(self, blob_id: bytes) -> tuple[bytes, str]:
        """A blob's sealed bytes, read from its pack, and the pack's ID."""
        location = self.load_index().get(blob_id)
        if location is None:
            raise IntegrityError(f"blob {blob_id.hex()[:12]} is not in the index (missing data)")
        try:
            sealed = self.storage.get(pack_key(location.pack), location.offset, location.length)
        except NotFound:
            raise IntegrityError(
                f"pack {location.pack[:12]} holding blob {blob_id.hex()[:12]} is missing"
            ) from None
        return sealed, location.pack

    def _load_tree(self, blob_hex: str, snapshot: Snapshot) -> bytes:
        """A tree blob, from the cache when it holds a copy of the indexed length that
        opens and matches its ID (one that does not is dropped), else from its pack,
        then copied to the cache."""
        blob_id = _tree_blob_id(blob_hex, snapshot)
        cache = self.cache
        location = self.load_index().get(blob_id) if cache is not None else None
        if cache is None or location is None:  # a tree the index lacks fails as without
            return self.load_blob(blob_id)
        sealed = cache.get("trees", blob_hex, hashed=False, size=location.length)
        if sealed is not None:
            try:
                return self._open_blob(blob_id, sealed, "(local cache)")
            except IntegrityError:
                cache.drop("trees", blob_hex)
        sealed, pack_id = self._read_sealed(blob_id)
        data = self.open_blob(blob_id, sealed, pack_id)
        cache.put("trees", blob_hex, sealed, hashed=False)
        return data

    def open_blob(self, blob_id: bytes, sealed: bytes, pack_id: str) -> bytes:
        """Decrypt, decompress and hash-check one sealed blob. A blob that fails is dropped
        from this process's index: a backup then stores it again instead of reusing it."""
        try:
            return self._open_blob(blob_id, sealed, pack_id)
        except IntegrityError:
            self.index.discard(blob_id)
            raise

    def _open_blob(self, blob_id: bytes, sealed: bytes, pack_id: str) -> bytes:
        what = f"blob {blob_id.hex()[:12]} in pack {pack_id[:12]}"
        plain = self.crypto.open(sealed, blob_id, what)
        if plain[:1] == _ZSTD:  # decompressed from a view: no copy of the whole blob
            try:
                data = self._decompressor().decompress(
                    memoryview(plain)[1:], max_output_size=_MAX_BLOB
                )
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{what} does not decompress: {exc}") from None
        elif plain[:1] == _RAW:
            data = plain[1:]
        else:
            raise IntegrityError(f"{what} has an unknown encoding")
        if self.crypto.blob_id(data) != blob_id:
            raise IntegrityError(f"{what} does not match its ID")
        return data

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dctx = getattr(self._dctx, "value", None)
        if dctx is None:
            dctx = self._dctx.value = zstandard.ZstdDecompressor()
        return dctx

    # --- snapshots ---------------------------------------------------------------------

    def save_snapshot(self, snapshot: Snapshot) -> Snapshot:
        """Seal and store a manifest; the snapshot becomes visible with this one PUT."""
        plain = zstandard.ZstdCompressor(level=3).compress(dumps(snapshot.to_manifest()))
        sealed = self.crypto.seal(plain, _SNAPSHOT_ASSOCIATED)
        snapshot_id = hashlib.sha256(sealed).hexdigest()
        self.storage.put(f"snapshots/{snapshot_id}", sealed)
        if self.cache is not None:
            self.cache.put("snapshots", snapshot_id, sealed)
        if self.listed_snapshots is not None:
            self.listed_snapshots.add(snapshot_id)
        return replace(snapshot, id=snapshot_id)

    def load_snapshot(self, snapshot_id: str, sealed: bytes | None = None) -> Snapshot:
        """A snapshot by ID (`sealed`: its object, when already read)."""
        size = self._listed_sizes.get(f"snapshots/{snapshot_id}")
        if sealed is None and self.cache is not None and size is not None:
            sealed = self.cache.get("snapshots", snapshot_id, size=size)
        if sealed is None:
            try:
                sealed = self.storage.get(f"snapshots/{snapshot_id}")
            except NotFound:
                raise SnapshotGone(f"snapshot {snapshot_id[:8]} does not exist") from None
            if self.cache is not None:
                self.cache.put("snapshots", snapshot_id, sealed)
        if hashlib.sha256(sealed).hexdigest() != snapshot_id:
            raise IntegrityError(f"snapshot {snapshot_id[:8]} does not match its hash")
        plain = self.crypto.open(sealed, _SNAPSHOT_ASSOCIATED, f"snapshot {snapshot_id[:8]}")
        try:
            raw = zstandard.ZstdDecompressor().decompress(plain, max_output_size=MAX_MANIFEST_BYTES)
            data = json.loads(raw)
        except (zstandard.ZstdError, ValueError) as exc:
            raise IntegrityError(f"snapshot {snapshot_id[:8]} is malformed: {exc}") from None
        if not isinstance(data, dict):
            raise IntegrityError(f"snapshot {snapshot_id[:8]} is malformed")
        return Snapshot.from_manifest(snapshot_id, data)

    def snapshot_ids(self) -> list[str]:
        """Every snapshot object's ID. Other names under `snapshots/` (an S3 console's
        "folder" key, a stray file) are no snapshots: listed in `foreign_objects`."""
        ids, stray = _list_names(self.storage, "snapshots/", self._listed_sizes)
        self._note_foreign(stray)
        self.listed_snapshots = set(ids)
        return ids

    def snapshots(self) -> list[Snapshot]:
        """Every readable snapshot, oldest first. A damaged one is left out with a warning
        and listed in `damaged_snapshots`, so it never blocks a backup, a listing or a
        forget; `opsagent backup forget ID` removes it."""
        found = []
        self.damaged_snapshots = {}
        ahead, self._snapshots_ahead = self._snapshots_ahead, None
        if ahead is not None:  # listed and read by `reconcile`, under the same lock
            ids, stray, objects = ahead.result()
            self._note_foreign(stray)
            self.listed_snapshots = set(ids)
        else:
            ids = self.snapshot_ids()
            objects = self._objects("snapshots", ids)
        for snapshot_id, sealed in objects:
            if sealed is None:
                continue  # deleted since the listing; any other storage error stops here
            try:
                found.append(self.load_snapshot(snapshot_id, sealed))
            except IntegrityError as exc:
                self.damaged_snapshots[snapshot_id] = str(exc)
        if self.cache is not None:  # the trees of snapshots no longer listed go
            self.cache.keep_only("trees", (blob for s in found for blob in s.tree))
        return sorted(found, key=lambda s: s.time)

    def _read_snapshots(self) -> _SnapshotListing:
        """Snapshot names, stray keys under snapshots/, and every snapshot object read."""
        ids, stray = _list_names(self.storage, "snapshots/", self._listed_sizes)
        return ids, stray, list(self._objects("snapshots", ids))

    def _objects(self, kind: Kind, names: list[str]) -> Iterator[tuple[str, bytes | None]]:
        """(name, object) for each listed index file or snapshot: the local copy when the
        cache has one, else read from storage (GET_MANY at a time) and copied; None for
        one deleted since the listing. Copies of objects not listed are removed."""
        cache = self.cache
        if cache is None:
            yield from _get_many(self.storage, [f"{kind}/{n}" for n in names])
            return
        cache.keep_only(kind, names)
        missing = []
        for name in names:
            data = cache.get(kind, name, size=self._listed_sizes.get(f"{kind}/{name}", -1))
            if data is None:
                missing.append(name)
            else:
                yield name, data
        for name, data in _get_many(self.storage, [f"{kind}/{n}" for n in missing]):
            if data is not None:
                cache.put(kind, name, data)
            yield name, data

    def find_snapshot(
        self, ref: str, source: str | None = None, host: str | None = None
    ) -> Snapshot:
        """A snapshot by ID prefix, or `latest` (optionally of one source and host)."""
        if ref == "latest":
            candidates = [
                s
                for s in self.snapshots()
                if (source is None or s.source == source) and (host is None or s.host == host)
            ]
            if not candidates:
                what = f" of source {source}" if source else ""
                raise BackupError(f"no snapshot{what} in {self.storage.url}")
            return candidates[-1]
        matches = [s for s in self.snapshot_ids() if s.startswith(ref)]
        if not matches:
            raise BackupError(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise BackupError(f"snapshot ID prefix {ref!r} is ambiguous ({len(matches)} match)")
        return self.load_snapshot(matches[0])

    def read_tree(
        self,
        snapshot: Snapshot,
        lost: list[str] | None = None,
        keep: TreeBlobs | None = None,
    ) -> Iterator[TreeEntry]:
        """The snapshot's entries in stored order; blank lines are skipped (older versions
        stored an empty tree as one newline). A tree blob that cannot be read or a
        malformed entry is an IntegrityError, unless `lost` is given: then it is skipped
        with the lines it cuts through and described there (repairs, partial restores).
        `keep` holds blobs for a later pass over the same tree (see TreeBlobs)."""
        for lines in self._tree_line_batches(snapshot, lost, keep):
            yield from _tree_entries(lines, snapshot, lost)

    def read_tree_lines(
        self,
        snapshot: Snapshot,
        lost: list[str] | None = None,
        keep: TreeBlobs | None = None,
    ) -> Iterator[bytes]:
        """The snapshot's tree lines as stored, undecoded (blank ones included); a tree
        blob that cannot be read is an IntegrityError (with `lost`: skipped, as in
        `read_tree`). One blob is held at a time, and those `keep` takes."""
        for lines in self._tree_line_batches(snapshot, lost, keep):
            yield from lines

    def _tree_line_batches(
        self, snapshot: Snapshot, lost: list[str] | None, keep: TreeBlobs | None = None
    ) -> Iterator[list[bytes]]:
        pending: list[bytes] = []  # the line under way; a dump's chunk list spans many blobs
        broken = False  # the previous blob was lost: the next one starts mid-line
        for number, blob_hex in enumerate(snapshot.tree):
            try:
                data = keep.get(blob_hex) if keep is not None else None
                if data is None:
                    data = self._load_tree(blob_hex, snapshot)
                    if keep is not None:
                        keep.put(blob_hex, data)
            except IntegrityError:
                if lost is None:
                    raise
                lost.append(f"(tree part {number + 1} of {len(snapshot.tree)}: entries unknown)")
                pending, broken = [], True
                continue
            if b"\n" not in data:  # joined once the line ends, not once per blob
                pending.append(data)
                continue
            *lines, rest = b"".join([*pending, data]).split(b"\n")
            pending = [rest]
            if broken and lines:
                lines, broken = lines[1:], False
            yield lines
        if not broken:
            yield [b"".join(pending)]

    def lock(self, exclusive: bool = False) -> RepositoryLock:
        """A lock on the repository, waiting up to `lock_wait` seconds for a conflicting one."""
        return RepositoryLock(self.storage, exclusive, wait=self.lock_wait)

    def write_index(self, packs: dict[str, list[PackEntry]], supersedes: list[str] = ()) -> str:
        sealed = encode_index(self.crypto, packs, list(supersedes))
        name = hashlib.sha256(sealed).hexdigest()
        self.storage.put(f"index/{name}", sealed)
        if self.cache is not None:
            self.cache.put("index", name, sealed)
        self.index_files[name] = list(packs)
        self.all_index_files.append(name)
        self.mentioned_packs.update(packs)
        for pack_id, entries in packs.items():
            self.index.add_pack(pack_id, entries)
        return name

    def write_superseding_index(self, packs: dict[str, list[PackEntry]]) -> list[str]:
        """Write one index file superseding every index file seen (in force, superseded or
        damaged) and return the keys of those files, for the caller to delete only now:
        deleting a superseding file while the files it superseded remain would bring them
        back in force (docs/repository-format.md, rule 1)."""
        seen = sorted(set(self.all_index_files))
        name = self.write_index(packs, supersedes=seen)
        return [f"index/{n}" for n in seen if n != name]

    def location(self, blob_id: bytes) -> Location | None:
        return self.load_index().get(blob_id)


class _Queued(NamedTuple):
    """A blob handed to the seal pool: what the pack's header needs besides its bytes."""

    type: BlobType
    id: bytes
    size: int


class BlobWriter:
    """Deduplicates, compresses, encrypts and packs blobs; uploads packs in the background.

    `add` is called from one thread. Compression and encryption run on a thread pool
    (zstd and AES release the GIL); finished packs upload on another, with a bounded
    number in flight so memory stays bounded whatever the input size. Small data blobs
    (the contents of small files) go to the pool in batches compressed by one zstd
    call: sealed one by one on the adding thread, they took a quarter of a small-file
    backup's single busy core, and handed over one by one, the hand-offs cost more than
    the work. A backend with a `spool` (a local directory) has packs written to unnamed
    files as they fill and linked into place (`put_file`), so memory holds no pack at
    all: 36 MiB less at 200,000 files.
    """

    def __init__(self, repo: Repository, level: int, pack_size: int, repack: bool = False) -> None:
        self.repo = repo
        self.level = level
        self.pack_size = pack_size
        # repacking (prune) rewrites blobs the index already has, and leaves writing
        # the index to its caller: `written` collects the new packs' entries
        self.repack = repack
        self.written: dict[str, list[PackEntry]] = {}
        workers = max(2, os.cpu_count() or 2)
        self._seal_pool = ThreadPoolExecutor(workers, thread_name_prefix="seal")
        self._upload_pool = ThreadPoolExecutor(2, thread_name_prefix="upload")
        # memory: at most UPLOAD_SLOTS finished packs, the ones being filled, the batch
        # being gathered and 2 x workers jobs (a blob up to CHUNK_MAX, or a batch up to
        # BATCH_BYTES plus one small blob) being sealed; enough to keep both cores and
        # the link busy
        self._upload_slots = threading.BoundedSemaphore(UPLOAD_SLOTS)
        # jobs handed to the seal pool, in order: each job's blobs (type, ID, raw size)
        # and the future of their sealed bytes; a job is one large blob or a batch
        self._inflight: deque[tuple[list[_Queued], Future[list[bytes]]]] = deque()
        self._max_inflight = workers * 2
        self._batch: list[_Queued] = []  # small blobs not yet handed to the pool
        self._batch_data: list[Blob] = []
        self._batch_bytes = 0
        self._pending: set[bytes] = set()
        # a backend that can spool (a local directory) gets packs written to a file
        # as they fill, so memory holds no pack; another (S3) gets the buffer
        self._spool = getattr(repo.storage, "spool", None)
        # data and tree blobs go to packs of their own, as restic's do: a lost or damaged
        # data pack then costs the files whose data it held, never a snapshot's tree
        # (which would leave nothing to name what was lost)
        self._builders = {kind: self._new_builder(kind) for kind in BlobType}
        self._uploads: list[Future[FinishedPack]] = []
        self._unindexed: dict[str, list[PackEntry]] = {}
        self._cctx = threading.local()
        self._counts = dict.fromkeys(WriteStats.__dataclass_fields__, 0)  # adding thread only

    @property
    def stats(self) -> WriteStats:
        return WriteStats(**self._counts)

    def add(self, blob_type: BlobType, data: Blob) -> bytes:
        """Store a blob unless the repository already has it; returns its ID. `data` may
        be a view of a larger immutable buffer (a file read whole): it is kept, not
        copied, until sealed."""
        blob_id = self.repo.crypto.blob_id(data)
        if (not self.repack and blob_id in self.repo.index) or blob_id in self._pending:
            self._bump(blobs_reused=1)
            return blob_id
        self._pending.add(blob_id)
        queued = _Queued(blob_type, blob_id, len(data))
        if len(data) > SMALL_BLOB or blob_type is not BlobType.DATA:  # batches: data only
            self._submit([queued], [data])
        else:
            self._batch.append(queued)
            self._batch_data.append(data)
            self._batch_bytes += len(data)
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_BLOBS:
                self._submit_batch()
        return blob_id

    def flush(self) -> WriteStats:
        """Pack and upload everything added, then write the index for it."""
        self._submit_batch()
        while self._inflight:
            self._drain_one()
        for kind, builder in self._builders.items():
            if len(builder):
                self._ship(kind)
        self._wait_uploads()
        self._write_index()
        return self.stats

    def close(self) -> None:
        """Release the pools without committing (after a failure)."""
        self._seal_pool.shutdown(wait=True, cancel_futures=True)
        self._upload_pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers -----------------------------------------------------------------------

    def _submit_batch(self) -> None:
        if self._batch:
            self._submit(self._batch, self._batch_data)
            self._batch, self._batch_data, self._batch_bytes = [], [], 0

    def _submit(self, queued: list[_Queued], data: list[Blob]) -> None:
        """Hand blobs to the seal pool; past the bound, take in the oldest job first."""
        future = self._seal_pool.submit(self._seal, [q.id for q in queued], data)
        self._inflight.append((queued, future))
        while len(self._inflight) > self._max_inflight:
            self._drain_one()

    def _seal(self, blob_ids: list[bytes], data: list[Blob]) -> list[bytearray]:
        """Each blob compressed (unless that saves under 3 %) and encrypted. A batch is
        compressed by one call, which holds the GIL once instead of once a blob. Each
        sealed blob is encrypted into its own buffer (`Crypto.seal_blob`): every copy of
        a blob costs a backup fresh pages, 4 GiB of them at 1 GiB stored before."""
        cctx = getattr(self._cctx, "value", None)
        if cctx is None:
            cctx = self._cctx.value = zstandard.ZstdCompressor(level=self.level)
        if len(data) == 1:
            compressed: Iterable[Any] = [cctx.compress(data[0])]
        else:
            compressed = cctx.multi_compress_to_buffer(data, threads=0)
        seal = self.repo.crypto.seal_blob
        sealed = []
        for blob_id, raw, packed in zip(blob_ids, data, compressed, strict=True):
            plain = _ZSTD + packed if len(packed) < len(raw) * 0.97 else _RAW + raw
            sealed.append(seal(plain, blob_id))
        return sealed

    def _drain_one(self) -> None:
        """The oldest job's blobs into the pack being filled, which is shipped once
        full. A batch goes whole into one pack, so a pack ends at most a batch (about
        BATCH_BYTES) past `pack_size`, as it could end a large blob past it."""
        queued, future = self._inflight.popleft()
        sealed = future.result()
        kind = queued[0].type  # a job's blobs are of one type
        builder = self._builders[kind]
        builder.add_many(((q.type, q.id) for q in queued), sealed)
        cache = self.repo.cache if not self.repack else None
        for blob, data in zip(queued, sealed, strict=True):
            if blob.type == BlobType.TREE and cache is not None:
                # the next backup reads this tree as its parent's
                cache.put("trees", blob.id.hex(), data, hashed=False)
        self._bump(
            blobs_new=len(queued),
            bytes_new=sum(q.size for q in queued),
            bytes_stored=sum(map(len, sealed)),
        )
        if builder.size >= self.pack_size:
            self._ship(kind)

    def _ship(self, kind: BlobType) -> None:
        pack = self._builders[kind].finish(self.repo.crypto)
        self._builders[kind] = self._new_builder(kind)
        self._check_failed_uploads()
        self._upload_slots.acquire()
        self._uploads.append(self._upload_pool.submit(self._upload, pack))
        self._bump(packs=1)
        done = [f for f in self._uploads if f.done()]
        for future in done:
            finished = future.result()
            self._unindexed[finished.id] = finished.entries
            self._uploads.remove(future)
        if len(self._unindexed) >= INDEX_EVERY_PACKS:
            self._write_index()

    def _new_builder(self, kind: BlobType) -> PackBuilder:
        # buffers grow as blobs come (see PackBuilder), and packs are hashed by the
        # uploading thread (`_upload`)
        return PackBuilder(0, self._spool, hashed=False)

    def _upload(self, pack: FinishedPack) -> FinishedPack:
        try:
            pack = pack.named()  # hashed here, off the thread that fills the packs
            if pack.file is not None:
                with pack.file:  # closed once stored: an unnamed spool file is then gone
                    self.repo.storage.put_file(pack_key(pack.id), pack.file, ObjectKind.DATA)  # type: ignore[attr-defined]
            else:
                self.repo.storage.put(pack_key(pack.id), pack.data, ObjectKind.DATA)
            self.repo.note_pack(pack.id, pack.size or len(pack.data))
            return FinishedPack(pack.id, b"", pack.entries)
        finally:
            self._upload_slots.release()

    def _check_failed_uploads(self) -> None:
        for future in self._uploads:
            if future.done() and future.exception() is not None:
                future.result()

    def _wait_uploads(self) -> None:
        for future in self._uploads:
            finished = future.result()
            self._unindexed[finished.id] = finished.entries
        self._uploads.clear()

    def _write_index(self) -> None:
        if self.repack:
            self.written.update(self._unindexed)
            self._unindexed = {}
            return
        if self._unindexed:
            self.repo.write_index(self._unindexed)
            for entries in self._unindexed.values():
                self._pending.difference_update(e.id for e in entries)
            self._unindexed = {}

    def _bump(self, **delta: int) -> None:
        counts = self._counts
        for name, value in delta.items():
            counts[name] += value


_SnapshotListing = tuple[list[str], list[str], list[tuple[str, bytes | None]]]


def _list_names(
    storage: Storage, prefix: str, sizes: dict[str, int]
) -> tuple[list[str], list[str]]:
    """The names under index/ or snapshots/ that are ours (64 hex digits), and the keys
    that are not (an S3 console's "folder" key, a stray file); `sizes` gets each name's
    size, under `prefix + name`."""
    names, stray = [], []
    for info in storage.list(prefix):
        name = info.key.rsplit("/", 1)[-1]
        if _PACK_NAME.fullmatch(name):
            names.append(name)
            sizes[prefix + name] = info.size
        else:
            stray.append(info.key)
    return names, stray


def _list_packs(storage: Storage) -> tuple[dict[str, int], list[str]]:
    """Every pack under data/ (ID -> size), and the keys there that are no packs."""
    packs: dict[str, int] = {}
    stray = []
    for info in storage.list("data/"):
        name = info.key.rsplit("/", 1)[-1]
        if _PACK_NAME.fullmatch(name) and info.key == pack_key(name):
            packs[name] = info.size
        else:
            stray.append(info.key)
    return packs, stray


def _get_many(storage: Storage, keys: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(key's last part, object) for each key in order, fetched GET_MANY at a time (an
    S3 round trip each: a hundred index files cost one second one by one); None for an
    object deleted since it was listed. Any other storage error is raised."""
    if len(keys) < 2:
        yield from ((key.rsplit("/", 1)[-1], _get_or_none(storage, key)) for key in keys)
        return
    with ThreadPoolExecutor(min(GET_MANY, len(keys)), thread_name_prefix="get") as pool:
        fetched = pool.map(lambda k: _get_or_none(storage, k), keys)
        for key, data in zip(keys, fetched, strict=True):
            yield key.rsplit("/", 1)[-1], data


def _get_or_none(storage: Storage, key: str) -> bytes | None:
    try:
        return storage.get(key)
    except NotFound:
        return None


def _exists(storage: Storage, key: str) -> bool:
    try:
        storage.stat(key)
    except NotFound:
        return False
    return True


class TreeBlobs:
    """Tree blobs kept for a second pass over the same tree, up to `limit` bytes: a
    small tree is read from storage once, a large one again rather than held whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self._blobs: dict[str, bytes] = {}

    def get(self, blob_hex: str) -> bytes | None:
        return self._blobs.get(blob_hex)

    def put(self, blob_hex: str, data: bytes) -> None:
        if self._held + len(data) <= self.limit:
            self._blobs[blob_hex] = data
            self._held += len(data)


def _tree_blob_id(blob_hex: str, snapshot: Snapshot) -> bytes:
    try:
        return bytes.fromhex(blob_hex)
    except ValueError:
        raise IntegrityError(f"snapshot {snapshot.short_id} has a bad tree ID") from None


def _tree_entries(
    lines: list[bytes], snapshot: Snapshot, lost: list[str] | None
) -> Iterator[TreeEntry]:
    """Decode tree lines; a malformed one is an IntegrityError, or with `lost` noted there."""
    for line in lines:
        try:
            entry = decode_tree_line(line)
        except (ValueError, TypeError) as exc:
            if lost is None:
                raise IntegrityError(
                    f"snapshot {snapshot.short_id} has a malformed tree entry: {exc}"
                ) from None
            lost.append("(one malformed tree entry)")
            continue
        if entry is not None:
            yield entry
