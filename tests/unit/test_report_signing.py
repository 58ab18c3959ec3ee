"""Report signatures: Ed25519 over the canonical JSON; any changed value fails, another
key fails, the key file is 0600 and never silently replaced."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.reports.signing import (
    SignatureInvalid,
    SigningError,
    canonical_bytes,
    create_key,
    key_id,
    load_key,
    parse_public_key,
    raw_public,
    sign,
    verify,
)

DOC: dict[str, Any] = {
    "schema": "opsagent-report/1",
    "kind": "recovery",
    "headline": "2 sources, 10 restore tests, 8 passed; worst RTO 9m12s (target 6h)",
    "hosts": ["web1", "hôte-2"],
    "empty": False,
    "period": {"since": "2026-09-03T20:00:00+00:00", "days": 90},
    "recovery": {
        "sources": [{"name": "files", "tests": 5, "worst_rto_seconds": 552.0, "kind": None}],
        "coverage": {"percent": 60.0, "days_to_full": 2.0},
    },
}


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    else:
        yield path, value


def changed(value: Any) -> Any:
    """The value with one character (or its truth) changed."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 0
    if isinstance(value, int | float):
        text = repr(value)
        return type(value)(text[:-1] + ("1" if text[-1] != "1" else "2"))
    return value[:-1] + ("x" if value[-1:] != "x" else "y")


def put(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(doc))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copy


@pytest.fixture
def key(tmp_path: Path) -> Any:
    return create_key(tmp_path / "report.key")


def test_signature_covers_the_canonical_json_and_names_its_key(key: Any) -> None:
    signed = sign(DOC, key)
    public = raw_public(key.public_key())
    assert signed["signed"] is True
    assert signed["signature"]["key_id"] == "sha256:" + hashlib.sha256(public).hexdigest()
    assert base64.b64decode(signed["signature"]["public_key"]) == public
    body = {k: v for k, v in signed.items() if k != "signature"}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(signed) == expected.encode("utf-8")
    assert "hôte-2".encode() in canonical_bytes(signed)
    key.public_key().verify(base64.b64decode(signed["signature"]["value"]), expected.encode())
    assert verify(signed, public) == key_id(public)
    # written with other spacing and key order, it is the same document
    reordered = json.loads(json.dumps(signed, indent=4, sort_keys=True))
    assert verify(reordered, public) == key_id(public)


def test_every_value_changed_by_one_character_fails(key: Any) -> None:
    signed = sign(DOC, key)
    paths = [p for p, _ in leaves(signed) if p[0] != "signature"]
    assert len(paths) >= 14
    for path, value in leaves(signed):
        if path[0] == "signature":
            continue
        tampered = put(signed, path, changed(value))
        with pytest.raises(SignatureInvalid, match="changed after it was signed"):
            verify(tampered)
    added = {**signed, "note": "all fine"}
    with pytest.raises(SignatureInvalid):
        verify(added)


def test_another_key_and_a_resigned_document_fail(key: Any, tmp_path: Path) -> None:
    signed = sign(DOC, key)
    other = create_key(tmp_path / "other.key")
    other_public = raw_public(other.public_key())
    with pytest.raises(SignatureInvalid, match=r"^signed by another key: sha256:"):
        verify(signed, other_public)
    # someone changes a figure and signs again with their own key: valid only as theirs
    forged = sign(put(signed, ("recovery", "coverage", "percent"), 100.0), other)
    assert verify(forged) == key_id(other_public)
    with pytest.raises(SignatureInvalid, match="another key"):
        verify(forged, raw_public(key.public_key()))
    # their signature pasted under the original public key
    mixed = {
        **forged,
        "signature": {
            **forged["signature"],
            **{k: signed["signature"][k] for k in ("public_key", "key_id")},
        },
    }
    with pytest.raises(SignatureInvalid, match="changed after it was signed"):
        verify(mixed)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (None, "not signed"),
        ({"algorithm": "rsa", "value": "AA=="}, "unknown signature algorithm"),
        ({"algorithm": "ed25519", "value": "%%%", "public_key": "AA=="}, "malformed"),
        ({"algorithm": "ed25519", "value": "AA==", "public_key": "AAAA"}, "malformed"),
    ],
)
def test_missing_or_malformed_signature_is_one_line(key: Any, signature: Any, message: str) -> None:
    doc = {**sign(DOC, key), "signature": signature}
    with pytest.raises(SignatureInvalid, match=message) as caught:
        verify(doc)
    assert "\n" not in str(caught.value)
    with pytest.raises(SignatureInvalid, match="JSON object"):
        verify([1, 2])


def test_key_file_is_private_and_never_replaced_silently(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "report.key"
    first = create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert raw_public(load_key(path).public_key()) == raw_public(first.public_key())
    with pytest.raises(SigningError, match="exists already; --force replaces it"):
        create_key(path)
    assert raw_public(load_key(path).public_key()) == raw_public(first.public_key())
    second = create_key(path, force=True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert raw_public(load_key(path).public_key()) == raw_public(second.public_key())
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    path.chmod(0o644)
    with pytest.raises(SigningError, match="readable by others"):
        load_key(path)
    path.chmod(0o600)
    path.write_text("not a key")
    with pytest.raises(SigningError, match="not an unencrypted PEM private key"):
        load_key(path)
    with pytest.raises(SigningError, match="no signing key"):
        load_key(tmp_path / "missing.key")


def test_public_key_is_read_as_printed_or_as_pem(key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    public = raw_public(key.public_key())
    assert parse_public_key(base64.b64encode(public).decode() + "\n") == public
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(pem.decode()) == public
    with pytest.raises(SigningError, match="has 3 bytes"):
        parse_public_key("AAAA")
    with pytest.raises(SigningError, match="not base64"):
        parse_public_key("not a key!")
