"""Keys and encryption for the repository.

A random master key (encryption key, chunk-ID key, chunker seed) is never stored in
clear: each key file holds it wrapped (AES-256-GCM) by a key derived from a
password with scrypt. Blobs are encrypted with AES-256-GCM under the master key, a
random 96-bit nonce each, and the blob's ID as associated data, so a blob cannot be
swapped for another without the MAC failing. Chunk IDs are BLAKE3 keyed with a
secret key: they reveal nothing about content to someone who holds only the bucket.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from agents.backup.errors import IntegrityError, WrongKey

NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG

# scrypt cost of new key files: restic's parameters (N=2^15, r=8, p=8), so a guessed
# password costs an attacker as much work and memory as against a restic repository:
# about 0.4 s and 32 MiB per unlock here. Key files written with the earlier
# N=2^16, p=1 (64 MiB, a quarter of the work) still open with what they record.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 8
_ENCRYPT_INTO = hasattr(AESGCM, "encrypt_into")


@dataclass(frozen=True)
class MasterKey:
    """The repository's secrets, all random, created once by `backup init`."""

    encryption: bytes
    chunk_id: bytes
    chunker_seed: int

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(32), secrets.token_bytes(32), secrets.randbits(63))

    def to_bytes(self) -> bytes:
        return self.encryption + self.chunk_id + self.chunker_seed.to_bytes(8, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> MasterKey:
        if len(data) != 72:
            raise WrongKey("repository key material has the wrong length")
        return cls(data[:32], data[32:64], int.from_bytes(data[64:], "big"))


class Crypto:
    """Encrypts, decrypts and names blobs with one master key."""

    def __init__(self, master: MasterKey) -> None:
        self.master = master
        self._aead = AESGCM(master.encryption)

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self.master.chunk_id).digest()

    def seal(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def seal_blob(self, plaintext: bytes | memoryview, associated: bytes) -> bytearray:
        """`seal` in one new buffer, the ciphertext encrypted straight in after the nonce:
        `seal` joins the two, a second copy of every blob a backup stores, each in pages
        the kernel must fault in and zero (see `BlobWriter._seal`)."""
        nonce = os.urandom(NONCE)
        out = bytearray(NONCE + len(plaintext) + TAG)
        out[:NONCE] = nonce
        if _ENCRYPT_INTO:
            self._aead.encrypt_into(nonce, plaintext, associated, memoryview(out)[NONCE:])
        else:  # a cryptography without `encrypt_into` (older releases)
            out[NONCE:] = self._aead.encrypt(nonce, plaintext, associated)
        return out

    def open(self, sealed: bytes, associated: bytes = b"", what: str = "object") -> bytes:
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], associated)
        except InvalidTag:
            raise IntegrityError(f"{what} fails authentication (corrupted or tampered)") from None


def wrap_master_key(master: MasterKey, password: str, host: str, user: str) -> dict[str, Any]:
    """A key file's content: the master key sealed with a password-derived key."""
    salt = secrets.token_bytes(16)
    kek = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    nonce = os.urandom(NONCE)
    sealed = AESGCM(kek).encrypt(nonce, master.to_bytes(), b"opsagent-key")
    return {
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": _b64(salt),
        "data": _b64(nonce + sealed),
        "created": datetime.now(UTC).isoformat(),
        "host": host,
        "user": user,
    }


def kdf_params(keyfile: dict[str, Any]) -> tuple[bytes, int, int, int]:
    """A key file's derivation inputs besides the password: (salt, n, r, p); raises
    WrongKey when the derivation is not ours or its parameters are out of range."""
    try:
        if keyfile.get("kdf") != "scrypt":
            raise WrongKey(f"unsupported key derivation {keyfile.get('kdf')!r}")
        n, r, p = int(keyfile["n"]), int(keyfile["r"]), int(keyfile["p"])
        if not (2**10 <= n <= 2**22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise WrongKey("key file has out-of-range scrypt parameters")
        return base64.b64decode(keyfile["salt"]), n, r, p
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WrongKey(f"malformed key file: {exc}") from None


def derive_key(password: str, params: tuple[bytes, int, int, int]) -> bytes:
    """The password-derived key for a key file's `kdf_params` (scrypt: the slow part)."""
    salt, n, r, p = params
    return _derive(password, salt, n, r, p)


def unwrap_master_key(
    keyfile: dict[str, Any], password: str, derived: bytes | None = None
) -> MasterKey:
    """Open one key file with a password; raises WrongKey. `derived` is
    `derive_key(password, kdf_params(keyfile))` when already computed (an unlock's head
    start): only the derivation is saved, the key file is opened the same way."""
    params = kdf_params(keyfile)
    try:
        kek = derived if derived is not None else derive_key(password, params)
        blob = base64.b64decode(keyfile["data"])
        plain = AESGCM(kek).decrypt(blob[:NONCE], blob[NONCE:], b"opsagent-key")
    except InvalidTag:
        raise WrongKey("wrong password or key file: no repository key opens with it") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WrongKey(f"malformed key file: {exc}") from None
    return MasterKey.from_bytes(plain)


def key_fingerprint(master: MasterKey) -> str:
    """A short checksum of the master key, to confirm an escrowed copy."""
    return blake3.blake3(master.to_bytes()).hexdigest()[:16]


def paper_key(master: MasterKey) -> str:
    """The master key as base32 in groups of 4, 8 groups a line: typeable from paper."""
    text = base64.b32encode(master.to_bytes()).decode().rstrip("=")
    groups = [text[i : i + 4] for i in range(0, len(text), 4)]
    lines = [" ".join(groups[i : i + 8]) for i in range(0, len(groups), 8)]
    return "\n".join(lines) + f"\nchecksum {key_fingerprint(master)}"


def read_paper_key(text: str) -> MasterKey:
    """Parse what `paper_key` printed (as typed back: case and spacing do not matter)."""
    checksum = None
    letters = []
    for line in text.splitlines():
        words = line.strip().split()
        if not words:
            continue
        if words[0].lower() == "checksum" and len(words) == 2:
            checksum = words[1].lower()
            continue
        if all(len(w) <= 4 and w.isalnum() for w in words):
            letters.append("".join(words).upper())
    data = "".join(letters)
    try:
        raw = base64.b32decode(data + "=" * (-len(data) % 8))
        master = MasterKey.from_bytes(raw)
    except (ValueError, WrongKey):
        raise WrongKey("the paper key does not decode: check for typing mistakes") from None
    if checksum is not None and key_fingerprint(master) != checksum:
        raise WrongKey("the paper key does not match its checksum: check for typing mistakes")
    return master


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
