"""Leaner forms of two pieces of diffusers' Wan blocks, for the generator's small shapes.

Same functions, fewer and cheaper tensor ops; the weights and their names do not change.
At the embedded model's size (64 tokens a world, 96 features) a forward is a few hundred
small ops, and in a batch of worlds their cost grows with the batch, so every full-size
op saved counts:

- rotary position in self-attention as ``x * cos + swap_pairs(x) * signed_sin``: two
  multiplies and an add on whole tensors instead of strided halves written into an empty
  one (bit for bit the same result);
- the tanh-approximate GELU as ``x * sigmoid(2u)``, which equals ``0.5 x (1 + tanh u)``,
  computed in place when no gradient is needed: this CPU build's ``tanh`` kernel is about
  four times slower than its ``sigmoid``. Results agree to float rounding (5e-7).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_GELU_K = 2.0 * math.sqrt(2.0 / math.pi)  # sigmoid(2u) with u = sqrt(2 / pi) (x + 0.044715 x^3)


def _swap_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...) along the last axis."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


class RotaryAttnProcessor:
    """Attention of the generator's ``WanAttention`` layers: self-attention with rotary
    position (interleaved pairs, as Wan's), or cross-attention to the camera tokens.

    Covers what the generator uses: separate q / k / v projections, no attention mask and
    no image context (Wan's I2V keys); anything else is refused rather than computed wrong.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attn.add_k_proj is not None or attention_mask is not None or attn.fused_projections:
            raise ValueError("RotaryAttnProcessor supports unfused projections without mask or image context")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(context).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            freqs_cos, freqs_sin = rotary_emb
            cos = freqs_cos[..., 0::2].repeat_interleave(2, dim=-1)
            sin = freqs_sin[..., 1::2]
            signed_sin = torch.stack([-sin, sin], dim=-1).flatten(-2)
            query = (query * cos + _swap_pairs(query) * signed_sin).type_as(value)
            key = (key * cos + _swap_pairs(key) * signed_sin).type_as(value)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class SigmoidGELU(nn.Module):
    """diffusers' ``GELU`` block with ``approximate="tanh"`` (a projection, then the
    activation), the activation computed through ``sigmoid``. Keeps the block's ``proj``,
    so state dicts are unchanged."""

    def __init__(self, proj: nn.Linear):
        super().__init__()
        self.proj = proj

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.proj(hidden_states)
        if torch.is_grad_enabled():
            return F.gelu(x, approximate="tanh")
        gate = x * x
        gate.mul_(0.044715 * _GELU_K).add_(_GELU_K).mul_(x)
        return gate.sigmoid_().mul_(x)


def use_lean_kernels(transformer: nn.Module) -> nn.Module:
    """Give a diffusers Wan transformer the lean attention and GELU above (in place)."""
    from diffusers.models.activations import GELU
    from diffusers.models.transformers.transformer_wan import WanAttention

    for module in list(transformer.modules()):
        if isinstance(module, WanAttention):
            module.set_processor(RotaryAttnProcessor())
        for name, child in module.named_children():
            if isinstance(child, GELU) and child.approximate == "tanh":
                setattr(module, name, SigmoidGELU(child.proj))
    return transformer
