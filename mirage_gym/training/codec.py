"""Stage 1 of ``mirage-gym train tiny``: the RGB-D codec on rendered frames."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mirage_gym.models.codec import RGBDCodec, depth_to_code, fit_patch_embedding
from mirage_gym.training.data import Sequences
from mirage_gym.training.loop import TrainLoop


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def codec_loss(codec: RGBDCodec, rgb: torch.Tensor, depth: torch.Tensor, depth_known: bool) -> dict[str, torch.Tensor]:
    """L1 on RGB and its gradients (keeps edges sharp), L1 on the depth code off the sky,
    and BCE on the sky flag."""
    out = codec.decode_raw(codec.encode(rgb, depth if depth_known else None))
    pred_rgb = (out[:, :3] + 1) / 2
    code, sky = depth_to_code(depth)
    solid = (~sky).float()
    losses = {
        "rgb": (pred_rgb - rgb).abs().mean(),
        "edges": sum((a - b).abs().mean() for a, b in zip(_gradients(pred_rgb), _gradients(rgb))) / 2,
        "depth": (((out[:, 3:4] + 1) / 2 - code).abs() * solid).sum() / solid.sum().clamp(min=1),
        "sky": F.binary_cross_entropy_with_logits(out[:, 4:5], sky.float()),
    }
    losses["total"] = losses["rgb"] + 0.5 * losses["edges"] + losses["depth"] + 0.1 * losses["sky"]
    return losses


def frame_batch(data: Sequences, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frames of the sequences as (B, 3, H, W) RGB in [0, 1] and (B, 1, H, W) depth."""
    n, t = data.rgb.shape[:2]
    i, j = rng.integers(n, size=batch), rng.integers(t, size=batch)
    rgb = torch.from_numpy(data.rgb[i, j]).permute(0, 3, 1, 2).float() / 255.0
    depth = torch.from_numpy(data.depth[i, j].astype(np.float32))[:, None]
    return rgb, depth


def train_codec(codec: RGBDCodec, data: Sequences, loop: TrainLoop, batch: int = 32, depth_dropout: float = 0.25):
    """Train ``codec`` for ``loop.steps`` steps (resuming from ``loop``'s checkpoint)."""
    for rng in loop:
        rgb, depth = frame_batch(data, rng, batch)
        loop.update(codec_loss(codec, rgb, depth, depth_known=rng.random() >= depth_dropout))


@torch.no_grad()
def init_codec(codec: RGBDCodec, data: Sequences, frames: int = 4096, seed: int = 0) -> None:
    """Fit the codec's linear path to the principal components of ``frames`` random frames."""
    rgb, depth = frame_batch(data, np.random.default_rng(seed), min(frames, data.rgb.shape[0] * data.rgb.shape[1]))
    fit_patch_embedding(codec, rgb, depth)


@torch.no_grad()
def fit_latent_stats(codec: RGBDCodec, data: Sequences, frames: int = 2048, seed: int = 0) -> None:
    """Set the codec's per-channel latent mean and std from ``frames`` random frames."""
    codec.latents_mean.zero_()
    codec.latents_std.fill_(1.0)
    rng = np.random.default_rng(seed)
    frames = min(frames, data.rgb.shape[0] * data.rgb.shape[1])
    latents = torch.cat([codec.encode(*frame_batch(data, rng, 128)) for _ in range(max(1, frames // 128))])
    codec.latents_mean.copy_(latents.mean(dim=(0, 2, 3)))
    codec.latents_std.copy_(latents.std(dim=(0, 2, 3)).clamp(min=1e-3))
