"""World snapshots on disk: safetensors tensors + JSON metadata, checksummed, written atomically.

Nothing is ever unpickled, so a snapshot from an untrusted source cannot run code. The
checksum covers the tensors *and* the metadata, so an edited field is refused like a
flipped bit. A save goes to a hidden temporary file in the same folder (named after the
target and the writing process) and is renamed over the target only once it is complete,
so a crash never leaves a half-written file in place of a good snapshot; temporaries that
a killed save left behind are removed by the next save to the same path. Only regular
files are written (an existing non-regular target such as ``/dev/null`` or a folder is
refused; a symbolic link is followed to its file), and a replaced file keeps its mode.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
import threading
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "mirage-gym-snapshot"
VERSION = 2  # 2: the checksum covers the metadata too


class SnapshotError(ValueError):
    """A snapshot file that is missing, corrupt, truncated or incompatible."""


def checksum(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order, then
    over ``meta`` as canonical JSON (sorted keys; JSON round-trips it exactly)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if meta is not None:
        h.update(b"meta|" + json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def save_snapshot(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and JSON-able ``meta`` to ``path`` atomically; returns the file written.

    Raises :class:`SnapshotError` if ``path`` exists and is not a regular file. A new file
    gets the usual mode (``0o666`` less the umask); a replaced one keeps its mode.
    """
    target = _regular_target(Path(path))
    meta = json.loads(json.dumps(meta))  # exactly what a reader will see (tuples become lists)
    header = {"format": FORMAT, "version": VERSION, "checksum": checksum(tensors, meta), "meta": meta}
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata={"mirage": json.dumps(header)})
        os.chmod(tmp, _mode_for(target))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _regular_target(path: Path) -> Path:
    """The file a save writes: ``path``, or the file a symbolic link at ``path`` points to."""
    target = path.resolve() if path.is_symlink() else path
    if target.exists() and not target.is_file():
        raise SnapshotError(f"snapshot path {path} exists and is not a regular file; refusing to replace it")
    return target


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporaries of ``target`` whose writing process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)-\d+\.tmp")
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        if match and not _process_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a mirage-gym snapshot (its 'mirage' metadata has no format {FORMAT!r})")
    if header.get("version") != VERSION:
        raise SnapshotError(f"snapshot {path} has format version {header.get('version')!r}, this build reads {VERSION}"
                            " (version 1 did not checksum its metadata, so it cannot be verified)")
    meta = header.get("meta")
    if not isinstance(meta, dict) or checksum(tensors, meta) != header.get("checksum"):
        raise SnapshotError(f"snapshot {path} failed its checksum: the file is corrupt or was edited")
    return tensors, meta
