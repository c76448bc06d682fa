"""Spatial memories: the latent memory the world model uses and the color baseline.

Both implement :class:`SpatialMemory` (a bank of all B worlds' memories, read, written and
queried in batches) and come as a single-world memory with per-frame calls."""

from mirage_gym.memory.base import MemoryReadout, SpatialMemory, WriteResult
from mirage_gym.memory.color import ColorMemoryBank, ColorPointCloudMemory
from mirage_gym.memory.filtering import LABEL_DYNAMIC, LABEL_SKY, LABEL_STATIC, static_keep_mask
from mirage_gym.memory.latent import LatentMemoryBank, LatentSpatialMemory

MEMORIES = {"latent": LatentMemoryBank, "color": ColorMemoryBank}  # the env's ``memory`` argument

__all__ = [
    "ColorMemoryBank",
    "ColorPointCloudMemory",
    "LABEL_DYNAMIC",
    "LABEL_SKY",
    "LABEL_STATIC",
    "LatentMemoryBank",
    "LatentSpatialMemory",
    "MEMORIES",
    "MemoryReadout",
    "SpatialMemory",
    "WriteResult",
    "static_keep_mask",
]
