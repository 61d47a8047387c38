"""Pseudonyms for the ids in a school's exports: HMAC-SHA256 under the school's own secret.

The secret is 32 random bytes in `NODE_DIR/school.secret` (mode 0600). It is created once, with
O_EXCL, and never overwritten: a new secret would silently turn every family into a new one.
It never leaves the node and is never logged. Without it, a pseudonym cannot be linked back to
an id, and two schools' pseudonyms of the same id differ.

    pseudonym = HMAC-SHA256(secret, f"{kind}:{raw_id}").hex()[:32]

Kinds keep the id spaces apart: a family and a student that share a raw id get different
pseudonyms.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import hashes, hmac

from client_node.errors import NodeError

SECRET_FILE = "school.secret"
SECRET_BYTES = 32
PSEUDONYM_CHARS = 32
Kind = Literal["family", "student", "message"]
KINDS: tuple[Kind, ...] = ("family", "student", "message")
_CACHE_SIZE = 1 << 18  # families and students repeat a lot (`many` skips it for messages)


def secret_path(node_dir: Path) -> Path:
    return Path(node_dir) / SECRET_FILE


def load_or_create_secret(node_dir: Path) -> bytes:
    """The node's secret; created (0600, O_EXCL) the first time, never overwritten."""
    path = secret_path(node_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(SECRET_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise NodeError(
            f"{path}: the school secret is readable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); allowed: 0600 (chmod 600 {path})"
        )
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise NodeError(
            f"{path}: the school secret has {len(secret)} bytes, expected {SECRET_BYTES}; "
            "restore it from the node's backup (a new secret would make every family a new one)"
        )
    return secret


class Pseudonymizer:
    """`pseudonymizer(kind, raw_id) -> str`, cached per process."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise NodeError(f"a school secret has {SECRET_BYTES} bytes, not {len(secret)}")
        self._keyed = hmac.HMAC(secret, hashes.SHA256())
        self._cached = lru_cache(maxsize=_CACHE_SIZE)(self._compute)

    @classmethod
    def for_node(cls, node_dir: Path) -> Pseudonymizer:
        """The node's pseudonymizer (its secret is created on first use)."""
        return _for_secret(load_or_create_secret(node_dir))

    def _compute(self, kind: str, raw_id: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{kind}:{raw_id}".encode())
        return mac.finalize().hex()[:PSEUDONYM_CHARS]

    def pseudonymize(self, kind: Kind, raw_id: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"pseudonym kind {kind!r} is not one of {', '.join(KINDS)}")
        return self._cached(kind, raw_id)

    __call__ = pseudonymize

    def many(self, kind: Kind, raw_ids: Iterable[str]) -> list[str]:
        """Pseudonyms of `raw_ids`, in order (pass unique ids: each one costs an HMAC)."""
        if kind not in KINDS:
            raise ValueError(f"pseudonym kind {kind!r} is not one of {', '.join(KINDS)}")
        one = self._compute if kind == "message" else self._cached  # messages never repeat
        return [one(kind, raw) for raw in raw_ids]


@lru_cache(maxsize=64)
def _for_secret(secret: bytes) -> Pseudonymizer:
    return Pseudonymizer(secret)


def pseudonymize(kind: Kind, raw_id: str, *, node_dir: Path) -> str:
    """The pseudonym of one id at the node in `node_dir`."""
    return Pseudonymizer.for_node(node_dir)(kind, raw_id)
