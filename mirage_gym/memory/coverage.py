"""Explored-space bookkeeping: which coarse voxels a world has ever observed.

Kept apart from the latent memory because memory evicts (capacity cap) while coverage
must not forget: the explore reward pays for voxels seen for the first time.
"""

from __future__ import annotations

import torch

from mirage_gym.memory.base import merge_sorted
from mirage_gym.memory.latent import voxel_keys


class CoverageGrid:
    """A growing set of coarse voxel keys (sorted int64 tensor)."""

    def __init__(self, voxel_size: float = 0.25, device: str | torch.device = "cpu"):
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.keys = torch.zeros(0, dtype=torch.long, device=device)

    def add(self, xyz: torch.Tensor) -> int:
        """Mark the voxels of points ``(N, 3)`` as seen; returns how many were new."""
        keys, in_range = voxel_keys(xyz.float(), self.voxel_size)
        return self.add_keys(keys[in_range])

    def add_keys(self, keys: torch.Tensor) -> int:
        """Mark voxels by key (from :func:`voxel_keys` at this grid's voxel size); returns
        how many were new."""
        keys = torch.unique(keys)
        pos = torch.searchsorted(self.keys, keys)
        if self.keys.numel():
            fresh = self.keys[pos.clamp(max=self.keys.numel() - 1)] != keys
            keys, pos = keys[fresh], pos[fresh]
        n = keys.numel()
        if n:
            self.keys, _ = merge_sorted(self.keys, keys, pos)
        return int(n)

    def contains(self, xyz: torch.Tensor) -> torch.Tensor:
        """Bool per point: is its voxel already covered."""
        keys, in_range = voxel_keys(xyz.float(), self.voxel_size)
        if self.keys.numel() == 0:
            return torch.zeros_like(in_range)
        pos = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        return (self.keys[pos] == keys) & in_range

    def __len__(self) -> int:
        return int(self.keys.numel())
