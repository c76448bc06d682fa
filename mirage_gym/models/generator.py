"""The generator: a ``WanVACETransformer3DModel`` that predicts the next latent frame.

Inputs (all at latent resolution, one frame on the frame axis):

- main branch: the noisy next latent and the latest latent frame as clean context,
  stacked in channels (on CPU, context on the frame axis costs far more);
- VACE control branch: memory projected at the target pose, its validity mask, its depth
  (coded like the codec's depth) and per-cell camera rays of the target view expressed in
  the previous camera's frame; zeros mean "no memory";
- camera motion: the relative pose as tokens in ``encoder_hidden_states``.

The network predicts a *residual over the projected memory*: ``x0 = mask * memory + net``.
With the output projections zero-initialised a fresh generator copies memory exactly, and
training teaches it what to change (view-dependent detail, holes) and what to invent where
memory is empty. See :mod:`mirage_gym.models.sampler` for how ``x0`` drives flow matching.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mirage_gym.constants import MOVE_STEP
from mirage_gym.models.codec import depth_to_code
from mirage_gym.models.kernels import use_lean_kernels

CONTROL_EXTRA = 5  # mask, memory depth code, ray (3)
CAMERA_FEATURES = 12  # rotation (9) + translation (3) of the relative pose


def tiny_transformer_config(latent_channels: int = 16, layers: int = 4, heads: int = 4, head_dim: int = 24,
                            vace_layers=(0, 2), text_dim: int = 32) -> dict:
    """``WanVACETransformer3DModel`` config of the embedded generator."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "in_channels": 2 * latent_channels,
        "out_channels": latent_channels,
        "text_dim": text_dim,
        "freq_dim": 64,
        "ffn_dim": 4 * heads * head_dim,
        "num_layers": layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 64,
        "vace_layers": list(vace_layers),
        "vace_in_channels": latent_channels + CONTROL_EXTRA,
    }


def zero_output_projections(transformer) -> None:
    """Zero the VACE hint projections (so the add-on starts as a no-op, as VACE intends;
    diffusers leaves them random) and the main output (so the residual starts at zero)."""
    for block in transformer.vace_blocks:
        nn.init.zeros_(block.proj_out.weight)
        nn.init.zeros_(block.proj_out.bias)
    nn.init.zeros_(transformer.proj_out.weight)
    nn.init.zeros_(transformer.proj_out.bias)


def camera_rays(relative_pose: torch.Tensor, height: int, width: int, fov_deg: float = 90.0) -> torch.Tensor:
    """(B, 3, h, w) unit ray of every target cell, in the previous camera's frame.

    A canonical ``fov_deg`` pinhole is used: the rays tell the generator which part of
    the view is new after a turn or a step, which does not hinge on the exact FOV.
    """
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=relative_pose.device) + 0.5,
        torch.arange(width, dtype=torch.float32, device=relative_pose.device) + 0.5,
        indexing="ij",
    )
    dirs = torch.stack([(u - width / 2) / focal, (v - height / 2) / focal, torch.ones_like(u)], 0)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    return torch.einsum("bij,jhw->bihw", relative_pose[:, :3, :3].float(), dirs)


def control_input(memory: torch.Tensor, mask: torch.Tensor, memory_depth: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """The VACE branch's (B, C + 5, 1, h, w) input."""
    code, sky = depth_to_code(memory_depth)
    valid = mask * (~sky).float()
    rays = camera_rays(camera, *memory.shape[-2:])
    return torch.cat([memory * mask, mask, code * valid, rays], 1)[:, :, None]


class CameraTokens(nn.Module):
    """Relative camera pose -> ``tokens`` tokens of ``dim`` features for cross-attention."""

    def __init__(self, dim: int, tokens: int = 4, hidden: int = 128):
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.net = nn.Sequential(nn.Linear(CAMERA_FEATURES, hidden), nn.SiLU(), nn.Linear(hidden, tokens * dim))

    def forward(self, relative_pose: torch.Tensor) -> torch.Tensor:
        # translations in move steps: the shipped tokens were trained with the rig's default step
        features = torch.cat([relative_pose[:, :3, :3].flatten(1), relative_pose[:, :3, 3] / MOVE_STEP], 1).float()
        return self.net(features).view(-1, self.tokens, self.dim)


class LatentGenerator(nn.Module):
    """The transformer plus its camera tokenizer; :meth:`predict_x0` is one network call."""

    def __init__(self, transformer, camera_tokens: CameraTokens):
        super().__init__()
        self.transformer = use_lean_kernels(transformer)
        self.camera_tokens = camera_tokens

    def predict_x0(self, noisy, sigma, context, memory, mask, memory_depth, camera) -> torch.Tensor:
        """Clean next latent (B, C, h, w) from the noisy one at noise level ``sigma`` (B,)."""
        hidden = torch.cat([noisy, context], 1)[:, :, None]
        control = control_input(memory, mask, memory_depth, camera)
        tokens = self.camera_tokens(camera)
        residual = self.transformer(
            hidden_states=hidden,
            timestep=sigma * 1000.0,  # the Wan classes expect the 0-1000 scale
            encoder_hidden_states=tokens,
            control_hidden_states=control,
            return_dict=False,
        )[0][:, :, 0]
        return memory * mask + residual
