"""Ed25519 signatures for policy files (and any file a privacy officer vouches for).

A signature is a detached JSON file beside the signed one (`FILE.sig`) holding the signer's key
id, the SHA-256 of the exact bytes signed, and the signature over those bytes. Verification
tells apart the three ways a file can fail: it has no signature, it was signed by another key,
or it changed after signing (one byte is enough).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privacy.crypto import sha256_hex
from privacy.errors import PrivacyError

ALGORITHM = "Ed25519"


class SignatureError(PrivacyError):
    """A key or signature is missing, unreadable or does not verify."""


@dataclass(frozen=True)
class Signature:
    key_id: str
    sha256: str
    signed_at: str


def signature_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sig")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_hex(raw)[:16]


def generate_keypair(out_dir: Path, *, name: str = "officer") -> tuple[Path, Path]:
    """Write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub; never overwrite an existing key."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (key_path, pub_path):
        if path.exists():
            raise SignatureError(f"{path} already exists; a key is never overwritten")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise SignatureError(f"private key {path}: not found") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"private key {path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"private key {path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise SignatureError(f"public key {path}: not found") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"public key {path}: not an Ed25519 key")
    return key


def sign_file(path: Path, *, key: Path) -> Path:
    """Sign the exact bytes of `path`; write and return `path`.sig."""
    private = load_private_key(key)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{path}: not found") from None
    record = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private.public_key()),
        "sha256": sha256_hex(data),
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "signature": base64.b64encode(private.sign(data)).decode(),
    }
    out = signature_path(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out)
    return out


def verify_file(path: Path, *, pubkey: Path) -> Signature:
    """Check `path` against its .sig and the trusted public key; raise SignatureError saying which."""
    trusted = load_public_key(pubkey)
    sig_path = signature_path(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{path}: not found") from None
    if not sig_path.is_file():
        raise SignatureError(f"{path}: unsigned (no {sig_path.name} beside it)")
    try:
        record = json.loads(sig_path.read_text())
        signature = base64.b64decode(record["signature"], validate=True)
        signer, digest, signed_at = record["key_id"], record["sha256"], record["signed_at"]
    except (ValueError, KeyError, TypeError):
        raise SignatureError(f"{sig_path}: not a readable signature file") from None
    if record.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{sig_path}: algorithm {record.get('algorithm')!r}, expected Ed25519")
    if signer != key_id(trusted):
        raise SignatureError(
            f"{path}: signed by another key (key id {signer}; the trusted key is {key_id(trusted)})"
        )
    try:
        trusted.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(
            f"{path}: changed after it was signed (the signature does not match its bytes)"
        ) from None
    return Signature(key_id=signer, sha256=digest, signed_at=signed_at)
