"""Spatial memories: the latent memory the world model uses and the color baseline."""

from mirage_gym.memory.base import MemoryReadout
from mirage_gym.memory.color import ColorPointCloudMemory
from mirage_gym.memory.filtering import LABEL_DYNAMIC, LABEL_SKY, LABEL_STATIC, static_keep_mask
from mirage_gym.memory.latent import LatentSpatialMemory

__all__ = [
    "ColorPointCloudMemory",
    "LABEL_DYNAMIC",
    "LABEL_SKY",
    "LABEL_STATIC",
    "LatentSpatialMemory",
    "MemoryReadout",
    "static_keep_mask",
]
