"""The RGB-D latent codec: maps RGB (plus depth when it is known) to a 4x-downsampled
latent grid and decodes RGB *and* metric depth.

Two paths, summed, both at latent resolution behind a ``patch_size`` pixel unshuffle (as
Wan2.2's VAE patchifies):

- a linear patch embedding and its inverse (1x1 convolutions), initialised in closed form
  from the principal components of training patches (:func:`fit_patch_embedding`): on
  these anti-aliased scenes 16 components of a 4x4 RGB-D patch already reconstruct RGB
  at about 34 dB, far beyond what a small convolutional net learns on CPU in an hour;
- a diffusers ``AutoencoderTiny`` whose output layers start at zero and learn what the
  linear code misses (depth from RGB alone, sky, non-linear detail).

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
import torch.nn.functional as F
from torch import nn

from mirage_gym.constants import FAR

DEPTH_NEAR = 0.1  # metres: the code's lower end
DEPTH_FAR = FAR  # metres: the code's upper end (the world's sky distance)
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


def tiny_codec_config(width: int = 64, latent_channels: int = 16, patch_size: int = 4, blocks: int = 2) -> dict:
    """``AutoencoderTiny`` config of the codec's non-linear path: one stage at latent
    resolution, on ``patch_size`` x ``patch_size`` unshuffled pixels."""
    return {
        "in_channels": IN_CHANNELS * patch_size**2,
        "out_channels": OUT_CHANNELS * patch_size**2,
        "encoder_block_out_channels": (width,),
        "decoder_block_out_channels": (width,),
        "num_encoder_blocks": (blocks,),
        "num_decoder_blocks": (blocks,),
        "latent_channels": latent_channels,
        "upsampling_scaling_factor": 2,
        "act_fn": "relu",
    }


class RGBDCodec(nn.Module):
    """Encode RGB(-D) to normalised latents and decode them to RGB in [0, 1] and z-depth.

    ``latents_mean`` / ``latents_std`` normalise each channel (as Wan's VAE does), so the
    generator works on unit-scale latents. Trained through ``encode`` / ``decode`` (the
    autoencoder's own ``forward`` rounds latents to bytes and stops gradients).
    """

    def __init__(self, autoencoder, patch_size: int = 4):
        super().__init__()
        if autoencoder.config.in_channels != IN_CHANNELS * patch_size**2:
            raise ValueError(
                f"autoencoder in_channels {autoencoder.config.in_channels} does not match patch_size {patch_size} "
                f"(expected {IN_CHANNELS * patch_size**2})"
            )
        if len(autoencoder.config.num_encoder_blocks) != 1:
            raise ValueError("the codec's autoencoder must have one stage (it runs at latent resolution)")
        self.autoencoder = autoencoder
        self.patch_size = self.downsample = int(patch_size)
        c = autoencoder.config.latent_channels
        self.embed = nn.Conv2d(IN_CHANNELS * patch_size**2, c, 1)
        self.unembed = nn.Conv2d(c, OUT_CHANNELS * patch_size**2, 1)
        self.register_buffer("latents_mean", torch.zeros(c))
        self.register_buffer("latents_std", torch.ones(c))

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    def _stats(self, like: torch.Tensor):
        return self.latents_mean.view(1, -1, 1, 1).to(like), self.latents_std.view(1, -1, 1, 1).to(like)

    def encode(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        x = F.pixel_unshuffle(codec_input(rgb, depth), self.patch_size)
        raw = self.embed(x) + self.autoencoder.encode(x).latents
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's 5 channels: RGB in [-1, 1], depth code in [-1, 1], sky logit."""
        mean, std = self._stats(latents)
        raw = latents * std + mean
        # DecoderTiny maps its layers' output y to 2y - 1: "+ 1" makes a zeroed last layer add nothing
        out = self.unembed(raw) + self.autoencoder.decode(raw).sample + 1.0
        return F.pixel_shuffle(out, self.patch_size)

    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.decode_raw(latents)
        rgb = ((out[:, :3] + 1) / 2).clamp(0, 1)
        depth = code_to_depth((out[:, 3:4] + 1) / 2, out[:, 4:5])
        return rgb, depth


def new_codec(width: int = 64, latent_channels: int = 16, patch_size: int = 4, blocks: int = 2) -> RGBDCodec:
    """A fresh codec whose non-linear path starts as a no-op (its output layers zeroed), so
    after :func:`fit_patch_embedding` it is exactly the linear code and training refines it."""
    from diffusers import AutoencoderTiny

    codec = RGBDCodec(AutoencoderTiny(**tiny_codec_config(width, latent_channels, patch_size, blocks)), patch_size)
    for conv in (codec.autoencoder.encoder.layers[-1], codec.autoencoder.decoder.layers[-1]):
        nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return codec


SKY_SHARPNESS = 50.0  # sky logit per unit of depth code above SKY_CODE, in the linear init
SKY_CODE = 0.96  # depth code in [-1, 1] above which the linear init calls a pixel sky (about 44 m)


@torch.no_grad()
def fit_patch_embedding(codec: RGBDCodec, rgb: torch.Tensor, depth: torch.Tensor) -> None:
    """Set the linear path to the principal components of the frames' RGB-D patches.

    ``rgb`` (N, 3, H, W) in [0, 1] and ``depth`` (N, 1, H, W): RGB and depth code, in the
    codec's [-1, 1] units, are unshuffled into patch vectors; their top ``latent_channels``
    principal directions become the embedding and, transposed, the inverse. The sky logit
    reads the reconstructed depth code (sky is coded as the far end).
    """
    p, c = codec.patch_size, codec.latent_channels
    x = codec_input(rgb, depth)[:, :4]  # rgb, depth code
    patches = F.pixel_unshuffle(x, p).permute(0, 2, 3, 1).reshape(-1, 4 * p * p).double()
    mean = patches.mean(0)
    cov = torch.cov((patches - mean).T)
    _, vectors = torch.linalg.eigh(cov)
    basis = vectors[:, -c:].flip(1)  # (4 p^2, c), strongest first
    k = p * p
    w_in = torch.zeros(c, IN_CHANNELS * k, dtype=torch.float64)
    w_in[:, : 4 * k] = basis.T
    codec.embed.weight.copy_(w_in[:, :, None, None])
    codec.embed.bias.copy_(-(basis.T @ mean))
    w_out = torch.zeros(OUT_CHANNELS * k, c, dtype=torch.float64)
    b_out = torch.zeros(OUT_CHANNELS * k, dtype=torch.float64)
    w_out[: 4 * k] = basis
    b_out[: 4 * k] = mean
    code_rows = slice(3 * k, 4 * k)
    w_out[4 * k :] = SKY_SHARPNESS * basis[code_rows]
    b_out[4 * k :] = SKY_SHARPNESS * (mean[code_rows] - SKY_CODE)
    codec.unembed.weight.copy_(w_out[:, :, None, None])
    codec.unembed.bias.copy_(b_out)
