"""Ed25519 signatures over a report document, and the signing key's file.

A report is signed over its canonical JSON: the document without its `signature` key,
`json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in UTF-8.
Any change of any figure changes those bytes and the signature no longer verifies.
The signature carries the public key and its id (`sha256:` + hex of the raw 32-byte
public key), so an auditor given the public key out of band can check who signed.

The private key is a PKCS#8 PEM file, mode 0600, never overwritten without `force`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agents.errors import OpsagentError

ALGORITHM = "ed25519"
SIGNATURE_FIELDS = {"algorithm", "key_id", "public_key", "value"}
KEY_FILE_NAME = "report-signing.key"  # under the config's state_dir by default


class SigningError(OpsagentError):
    """A signing key that cannot be made, read or used; one line."""

    exit_code = 2


class SignatureInvalid(OpsagentError):
    """A document whose signature is missing, malformed, wrong or from another key."""

    exit_code = 1


def canonical_bytes(doc: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the document without `signature`, canonical JSON."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: bytes) -> str:
    """`sha256:<hex>` of the raw public key: how a signer is named."""
    return "sha256:" + hashlib.sha256(public).hexdigest()


def create_key(path: Path, force: bool = False) -> Ed25519PrivateKey:
    """A new private key written to `path` (0600, directory made 0700 if missing);
    refuses to replace an existing key unless `force`."""
    if path.exists() and not force:
        raise SigningError(f"{path}: a signing key exists already; --force replaces it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SigningError(f"{path}: cannot write the signing key: {exc.strerror}") from None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
        temp = Path(name)  # a name of its own: a concurrent init cannot take it over
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp: mode 0600
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            if force:
                os.replace(temp, path)
            else:
                os.link(temp, path)  # only if nothing is there: the key printed is the one kept
        finally:
            temp.unlink(missing_ok=True)
    except FileExistsError:
        raise SigningError(f"{path}: a signing key exists already; --force replaces it") from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot write the signing key: {exc.strerror}") from None
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    """The private key of `path`; refuses a file others can read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a device or a FIFO would be read forever
            raise SigningError(f"{path}: the signing key is not a regular file")
        mode = info.st_mode & 0o077
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningError(
            f"{path}: no signing key (create one with `opsagent report key init`)"
        ) from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    if mode:
        raise SigningError(f"{path}: the signing key is readable by others; chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public key as the signature and `report key show` print it: base64 of 32 bytes."""
    return base64.b64encode(raw_public(key.public_key())).decode()


def parse_public_key(text: str) -> bytes:
    """A public key given by a person: base64 of the raw 32 bytes, or a PEM public key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            loaded = serialization.load_pem_public_key(text.encode())
        except ValueError:
            raise SigningError("the public key is not a valid PEM public key") from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise SigningError("the public key is not an Ed25519 key")
        return raw_public(loaded)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SigningError("the public key is not base64 (report key show prints it)") from None
    if len(raw) != 32:
        raise SigningError(f"the public key has {len(raw)} bytes, an Ed25519 key has 32")
    return raw


def sign(doc: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The document, marked `signed`, with its `signature` (any previous one replaced)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    body["signed"] = True
    public = raw_public(key.public_key())
    return {
        **body,
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key_id(public),
            "public_key": base64.b64encode(public).decode(),
            "value": base64.b64encode(key.sign(canonical_bytes(body))).decode(),
        },
    }


def verify(doc: Any, expected_public: bytes | None = None) -> str:
    """The key id that signed `doc`; SignatureInvalid (one line) when it is unsigned,
    malformed, changed after signing, or signed by a key other than `expected_public`."""
    if not isinstance(doc, dict):
        raise SignatureInvalid("not a report document (a JSON object is expected)")
    signature = doc.get("signature")
    if not isinstance(signature, dict) or not signature.get("value"):
        raise SignatureInvalid("not signed: the document has no signature")
    unknown = sorted(set(signature) - SIGNATURE_FIELDS)
    if unknown:  # nothing beside the signature is signed: it must not look signed
        raise SignatureInvalid(f"the signature has unknown field(s): {', '.join(unknown)}")
    if signature.get("algorithm") != ALGORITHM:
        raise SignatureInvalid(f"unknown signature algorithm {signature.get('algorithm')!r}")
    try:
        public = base64.b64decode(str(signature.get("public_key", "")), validate=True)
        value = base64.b64decode(str(signature["value"]), validate=True)
        embedded = Ed25519PublicKey.from_public_bytes(public)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(
            "the signature or its public key is malformed (not base64 of an Ed25519 key)"
        ) from None
    if expected_public is not None and public != expected_public:
        raise SignatureInvalid(
            f"signed by another key: {key_id(public)}, expected {key_id(expected_public)}"
        )
    if signature.get("key_id") != key_id(public):
        raise SignatureInvalid("the signature's key_id does not match its public key")
    try:
        embedded.verify(value, canonical_bytes(doc))
    except InvalidSignature:
        raise SignatureInvalid(
            "signature does not match: the document was changed after it was signed"
        ) from None
    return key_id(public)
