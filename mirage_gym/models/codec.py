"""The RGB-D latent codec: a small diffusers ``AutoencoderTiny`` that maps RGB (plus depth
when it is known) to a 4x-downsampled latent grid and decodes RGB *and* metric depth.

Why depth goes in when known: depth from RGB alone is ill-posed at this scale, and every
frame the world writes to memory needs metric geometry. The seed frame of a procedural
scene comes with exact depth; generated frames carry the geometry their latents encode
(as Voyager's RGB-D generation does). A user image without depth gets the codec's own
estimate (the encoder was trained with depth withheld a quarter of the time).

Depth is coded as ``log(d / near) / log(far / near)`` in [0, 1] plus a sky channel, so the
error is relative (what AbsRel measures) and "nothing hit" has its own flag.
"""

from __future__ import annotations

import math

import torch

DEPTH_NEAR = 0.1  # metres: the code's lower end
DEPTH_FAR = 50.0  # metres: the code's upper end (the world's sky distance)
IN_CHANNELS = 6  # rgb (3), depth code, sky flag, depth-known flag; all in [-1, 1]
OUT_CHANNELS = 5  # rgb (3), depth code, sky logit


def depth_to_code(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-depth (inf = sky) -> (code in [0, 1], sky bool)."""
    sky = ~torch.isfinite(depth) | (depth >= DEPTH_FAR)
    d = torch.where(sky, torch.full_like(depth, DEPTH_FAR), depth).clamp(DEPTH_NEAR, DEPTH_FAR)
    return torch.log(d / DEPTH_NEAR) / math.log(DEPTH_FAR / DEPTH_NEAR), sky


def code_to_depth(code: torch.Tensor, sky_logit: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`depth_to_code`: metres, ``inf`` where the sky logit is positive."""
    depth = DEPTH_NEAR * torch.exp(code.clamp(0, 1) * math.log(DEPTH_FAR / DEPTH_NEAR))
    return torch.where(sky_logit > 0, torch.full_like(depth, math.inf), depth)


def codec_input(rgb: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] + optional (B, 1, H, W) depth -> the encoder's 6 channels."""
    b, _, h, w = rgb.shape
    if depth is None:
        zeros = rgb.new_zeros(b, 1, h, w)
        return torch.cat([rgb * 2 - 1, zeros, zeros, -torch.ones_like(zeros)], 1)
    code, sky = depth_to_code(depth)
    return torch.cat([rgb * 2 - 1, code * 2 - 1, sky.float() * 2 - 1, torch.ones_like(code)], 1)


def tiny_codec_config(width: int = 48, latent_channels: int = 16) -> dict:
    """``AutoencoderTiny`` config of the embedded codec: three stages (two 2x steps), all
    blocks ``width`` wide (the class requires equal widths)."""
    return {
        "in_channels": IN_CHANNELS,
        "out_channels": OUT_CHANNELS,
        "encoder_block_out_channels": (width, width, width),
        "decoder_block_out_channels": (width, width, width),
        "num_encoder_blocks": (1, 2, 2),
        "num_decoder_blocks": (2, 2, 1),
        "latent_channels": latent_channels,
        "upsampling_scaling_factor": 2,
        "act_fn": "relu",
    }


class RGBDCodec(torch.nn.Module):
    """Encode RGB(-D) to normalised latents and decode them to RGB in [0, 1] and z-depth.

    ``latents_mean`` / ``latents_std`` normalise each channel (as Wan's VAE does), so the
    generator works on unit-scale latents. Trained through ``encode`` / ``decode`` (the
    autoencoder's own ``forward`` rounds latents to bytes and stops gradients).
    """

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder
        c = autoencoder.config.latent_channels
        self.register_buffer("latents_mean", torch.zeros(c))
        self.register_buffer("latents_std", torch.ones(c))
        self.downsample = 2 ** (len(autoencoder.config.num_encoder_blocks) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    def _stats(self, like: torch.Tensor):
        return self.latents_mean.view(1, -1, 1, 1).to(like), self.latents_std.view(1, -1, 1, 1).to(like)

    def encode(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.autoencoder.encode(codec_input(rgb, depth)).latents
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's 5 channels: RGB in [-1, 1], depth code in [-1, 1], sky logit."""
        mean, std = self._stats(latents)
        return self.autoencoder.decode(latents * std + mean).sample

    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.decode_raw(latents)
        rgb = ((out[:, :3] + 1) / 2).clamp(0, 1)
        depth = code_to_depth((out[:, 3:4] + 1) / 2, out[:, 4:5])
        return rgb, depth
