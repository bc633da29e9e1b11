"""Content hashes used to name caches and to identify weight files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_digest(value: object, length: int = 24) -> str:
    """Short sha256 of a JSON-able value with sorted keys: the same settings give the same name anywhere."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def files_fingerprint(paths: list[Path], root: Path) -> str:
    """Cheap content identity: names relative to the root, sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{os.path.relpath(path, root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
