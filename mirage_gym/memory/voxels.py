"""Voxel keys and sorted key sets: the one implementation every memory uses.

A voxel key packs a point's integer voxel coordinates into one int64; a sorted 1-D tensor
of unique keys is a set with O(M log N) look-ups (``torch.searchsorted``) and linear-time
merges. The latent memory, the color memory, the sky dome (direction bins) and the
coverage grid all keep their entries this way.
"""

from __future__ import annotations

import torch

KEY_BITS = 21  # per axis: at 5 cm voxels that spans about 100 km, far beyond any scene
KEY_OFFSET = 1 << (KEY_BITS - 1)
CHUNK_BITS = 4  # a chunk is 16 voxels a side (0.8 m at 5 cm): the unit of culling
LOCAL_BITS = 3 * CHUNK_BITS


def pack_keys(ijk: torch.Tensor, bits: int) -> torch.Tensor:
    """One int64 per row of non-negative integer coordinates (N, 3) of ``bits`` each."""
    return (ijk[:, 0] << (2 * bits)) | (ijk[:, 1] << bits) | ijk[:, 2]


def unpack_keys(keys: torch.Tensor, bits: int) -> torch.Tensor:
    """The (N, 3) coordinates :func:`pack_keys` packed."""
    mask = (1 << bits) - 1
    return torch.stack([(keys >> (2 * bits)) & mask, (keys >> bits) & mask, keys & mask], dim=1)


def voxel_ijk(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative voxel coordinates (N, 3) of ``KEY_BITS`` each, and which points fit them."""
    ijk = torch.floor(xyz / voxel_size).long() + KEY_OFFSET
    in_range = ((ijk >= 0) & (ijk < (1 << KEY_BITS))).all(dim=1)
    return ijk.clamp(0, (1 << KEY_BITS) - 1), in_range


def voxel_keys(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One int64 key per point for its voxel, and which points are inside the hashable range."""
    ijk, in_range = voxel_ijk(xyz, voxel_size)
    return pack_keys(ijk, KEY_BITS), in_range


def chunk_major_keys(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`voxel_keys` but with the voxel's chunk in the high bits (``key >> LOCAL_BITS``
    is the chunk id), so that sorted, the voxels of one chunk are contiguous."""
    ijk, in_range = voxel_ijk(xyz, voxel_size)
    chunk = pack_keys(ijk >> CHUNK_BITS, KEY_BITS - CHUNK_BITS)
    local = pack_keys(ijk & ((1 << CHUNK_BITS) - 1), CHUNK_BITS)
    return (chunk << LOCAL_BITS) | local, in_range


def chunk_centres(chunks: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """World centres (K, 3) float64 of chunk ids (``chunk_major_key >> LOCAL_BITS``)."""
    c = unpack_keys(chunks, KEY_BITS - CHUNK_BITS)
    return ((c.double() + 0.5) * (1 << CHUNK_BITS) - KEY_OFFSET) * voxel_size


def find(sorted_keys: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each of ``keys`` is in the sorted set (its insertion position) and whether it is there."""
    pos = torch.searchsorted(sorted_keys, keys)
    if sorted_keys.numel() == 0:
        return pos, torch.zeros_like(keys, dtype=torch.bool)
    return pos, sorted_keys[pos.clamp(max=sorted_keys.numel() - 1)] == keys


def merge_sorted(old_keys: torch.Tensor, new_keys: torch.Tensor, positions: torch.Tensor | None = None,
                 values: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()):
    """Merge sorted, disjoint 1-D ``new_keys`` into sorted ``old_keys`` in one linear pass
    (the new rows go to their places, the old rows fill the gaps in order), instead of
    sorting both again. ``positions`` is ``searchsorted(old_keys, new_keys)`` if known;
    ``values`` are ``(old, new)`` pairs of per-key tensors (any trailing shape) merged
    alongside. Returns the merged keys and the list of merged values."""
    if positions is None:
        positions = torch.searchsorted(old_keys, new_keys)
    new_at = positions + torch.arange(new_keys.numel(), device=new_keys.device)
    old_rows = torch.ones(old_keys.numel() + new_keys.numel(), dtype=torch.bool, device=new_keys.device)
    old_rows[new_at] = False
    merged = []
    for old, new in ((old_keys, new_keys), *values):
        out = torch.empty((old_rows.numel(), *old.shape[1:]), dtype=old.dtype, device=old.device)
        out[new_at] = new.to(old.dtype)
        out[old_rows] = old
        merged.append(out)
    return merged[0], merged[1:]


def insert_new(sorted_keys: torch.Tensor, keys: torch.Tensor,
               values: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()):
    """Add the unique, sorted ``keys`` not yet in the set; returns the merged keys, the
    merged values (see :func:`merge_sorted`) and which of ``keys`` were new."""
    pos, known = find(sorted_keys, keys)
    fresh = ~known
    merged, merged_values = merge_sorted(sorted_keys, keys[fresh], pos[fresh],
                                         tuple((old, new[fresh]) for old, new in values))
    return merged, merged_values, fresh


def one_per_voxel(keys: torch.Tensor, priority: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The winner among candidates that share a voxel key: the lowest ``priority``, ties to
    the earlier candidate. Returns the unique keys (sorted) and the winning candidate of each."""
    order = torch.argsort(priority, stable=True)
    uniq, inverse = torch.unique(keys, return_inverse=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=keys.device)
    first = torch.full((uniq.numel(),), order.numel(), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, rank, reduce="amin")
    return uniq, order[first]
