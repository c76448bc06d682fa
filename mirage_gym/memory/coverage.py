"""Explored-space bookkeeping: which coarse voxels a world has ever observed.

Kept apart from the latent memory because memory evicts (capacity cap) while coverage
must not forget: the explore reward pays for voxels seen for the first time.
"""

from __future__ import annotations

import torch

from mirage_gym.constants import COVERAGE_VOXEL
from mirage_gym.memory.voxels import find, insert_new, voxel_keys


class CoverageGrid:
    """A growing set of coarse voxel keys (sorted int64 tensor)."""

    def __init__(self, voxel_size: float = COVERAGE_VOXEL, device: str | torch.device = "cpu"):
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
        self.keys, _, fresh = insert_new(self.keys, torch.unique(keys))
        return int(fresh.sum())

    def contains(self, xyz: torch.Tensor) -> torch.Tensor:
        """Bool per point: is its voxel already covered."""
        keys, in_range = voxel_keys(xyz.float(), self.voxel_size)
        return find(self.keys, keys)[1] & in_range

    def __len__(self) -> int:
        return int(self.keys.numel())
