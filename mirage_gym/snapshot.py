"""World snapshots on disk: safetensors tensors + JSON metadata, checksummed, written atomically.

Nothing is ever unpickled, so a snapshot from an untrusted source cannot run code. A save
goes to a temporary file in the same folder and is renamed over the target only once it
is complete, so a crash never leaves a half-written file in place of a good snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "mirage-gym-snapshot"
VERSION = 1


class SnapshotError(ValueError):
    """A snapshot file that is missing, corrupt, truncated or incompatible."""


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_snapshot(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and JSON-able ``meta`` to ``path`` atomically."""
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, "checksum": checksum(tensors), "meta": meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata={"mirage": json.dumps(header)})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_snapshot(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a snapshot; raises :class:`SnapshotError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"snapshot file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("mirage")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SnapshotError(f"snapshot {path} is corrupt or truncated: {exc}") from exc
    if raw is None:
        raise SnapshotError(f"{path} is a safetensors file but not a mirage-gym snapshot (no 'mirage' metadata)")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"snapshot {path} has corrupt metadata: {exc}") from exc
    if header.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a mirage-gym snapshot (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise SnapshotError(f"snapshot {path} has format version {header.get('version')}, this build reads {VERSION}")
    if checksum(tensors) != header.get("checksum"):
        raise SnapshotError(f"snapshot {path} failed its checksum: the file is corrupt")
    return tensors, header["meta"]
