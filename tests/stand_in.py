"""A transparent stand-in world model for tests of the plumbing (no trained weights)."""

import math

import torch
import torch.nn.functional as F


class PoolingBackend:
    """Latent = area-pooled RGB + inverse depth; generation copies memory, fills small holes
    from neighbouring memory cells, and leaves sky-like grey (not remembered) elsewhere."""

    latent_channels = 4
    downsample = 4

    def encode(self, rgb, depth):
        inv = torch.zeros_like(rgb[:, :1]) if depth is None else 1.0 / (1.0 + depth)
        return F.avg_pool2d(torch.cat([rgb, inv], 1), self.downsample)

    def decode(self, latents):
        up = F.interpolate(latents, scale_factor=self.downsample, mode="nearest")
        inv = up[:, 3:]
        depth = torch.where(inv > 1e-3, 1.0 / inv.clamp(min=1e-6) - 1.0, torch.full_like(inv, math.inf))
        return up[:, :3], depth

    def generate(self, context, memory, mask, memory_depth, camera, noise):
        # the latent's depth channel is view-dependent: take it from the memory's z-depth
        memory = torch.cat([memory[:, :3], 1.0 / (1.0 + memory_depth)], 1)
        memory = torch.nan_to_num(memory, posinf=0.0)
        for _ in range(2):  # fill the holes that magnification opens between points
            total = F.avg_pool2d(memory * mask, 3, 1, 1)
            weight = F.avg_pool2d(mask, 3, 1, 1)
            memory = torch.where(mask > 0, memory, total / weight.clamp(min=1e-6))
            mask = (weight > 0).float().where(mask == 0, mask)
        unknown = torch.cat([torch.full_like(memory[:, :3], 0.5) + 1e-3 * noise[:, :3], torch.zeros_like(mask)], 1)
        return mask * memory + (1 - mask) * unknown
