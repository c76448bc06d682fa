"""Wan2.2's causal video VAE (``AutoencoderKLWan``) as the world's codec, decoding as a stream.

The decoder is causal in time: each latent frame is decoded with a cache of the previous
chunk's last activations (``feat_cache``), and the first latent frame of a video decodes to
one frame, every later one to ``scale_factor_temporal`` (4) frames. diffusers' ``decode``
runs a whole clip with a fresh cache; a world instead keeps one :class:`DecodeStream` per
episode and decodes one latent frame per step, so a step costs the same at step 10 and at
step 10 000 and the frames equal those of decoding the whole episode at once.

Worlds are decoded together when their caches have the same layout (the same number of
chunks decoded so far, up to two, after which the layout no longer changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DecodeStream:
    """One episode's decoder cache: entries are None (nothing yet), the string ``"Rep"``
    (diffusers' mark for an upsampler after the first chunk) or tensors."""

    cache: list = field(default_factory=list)

    def layout(self) -> tuple:
        return tuple(e if not isinstance(e, torch.Tensor) else tuple(e.shape) for e in self.cache)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], list]:
        """Tensors by index, and the per-entry kinds (JSON) to rebuild the list."""
        tensors = {str(i): e.detach().cpu().clone() for i, e in enumerate(self.cache) if isinstance(e, torch.Tensor)}
        kinds = ["tensor" if isinstance(e, torch.Tensor) else e for e in self.cache]
        return tensors, kinds

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], kinds: list, device) -> DecodeStream:
        expected = {str(i) for i, kind in enumerate(kinds) if kind == "tensor"}
        if set(tensors) != expected:
            raise ValueError(f"decode stream tensors {sorted(tensors)} do not match its layout (expected {sorted(expected)})")
        cache = []
        for i, kind in enumerate(kinds):
            if kind == "tensor":
                entry = tensors[str(i)]
                if entry.ndim != 5 or not entry.is_floating_point() or not torch.isfinite(entry).all():
                    raise ValueError(f"decode stream entry {i} must be a finite (B, C, T, H, W) float tensor")
                cache.append(entry.to(device))
            elif kind in (None, "Rep"):
                cache.append(kind)
            else:
                raise ValueError(f"decode stream entry {i} has unknown kind {kind!r}")
        return cls(cache)


class WanVideoCodec:
    """Encode images to Wan latents (normalised per channel, as Wan's pipelines do) and
    decode latent frames through per-episode :class:`DecodeStream` caches."""

    def __init__(self, vae):
        self.vae = vae
        config = vae.config
        self.latent_channels = int(config.z_dim)
        self.downsample = int(config.scale_factor_spatial)
        self.frames_per_latent = int(config.scale_factor_temporal)
        self.cache_size = int(vae._cached_conv_counts["decoder"])
        self.mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, -1, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def new_stream(self) -> DecodeStream:
        return DecodeStream([None] * self.cache_size)

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised latents (B, C, h, w) of a one-frame video
        (the distribution's mode: a seed frame encodes the same way every time)."""
        video = (rgb.to(self.device, self.vae.dtype) * 2 - 1)[:, :, None]
        raw = self.vae.encode(video).latent_dist.mode()[:, :, 0].float()
        return (raw - self.mean.to(raw.device)) / self.std.to(raw.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, streams: list[DecodeStream]) -> torch.Tensor:
        """Decode one latent frame per world (B, C, h, w), continuing each world's stream;
        returns (B, T, 3, H, W) in [0, 1] (T = 1 for a stream's first frame, else 4)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        if len(streams) != latents.shape[0]:
            raise ValueError(f"one stream per latent expected, got {len(streams)} for {latents.shape[0]}")
        raw = latents.to(self.device).float() * self.std.to(self.device) + self.mean.to(self.device)
        x = self.vae.post_quant_conv(raw.to(self.vae.dtype)[:, :, None])
        groups: dict[tuple, list[int]] = {}
        for i, stream in enumerate(streams):
            groups.setdefault(stream.layout(), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(streams)
        for rows in groups.values():
            first = all(e is None for e in streams[rows[0]].cache)
            cache = [_stack([streams[i].cache[k] for i in rows]) for k in range(self.cache_size)]
            frames = self.vae.decoder(x[rows], feat_cache=cache, feat_idx=[0], first_chunk=first)
            if self.vae.config.patch_size is not None:
                frames = unpatchify(frames, patch_size=self.vae.config.patch_size)
            frames = ((frames.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4)
            for j, i in enumerate(rows):
                streams[i].cache = [e[j : j + 1] if isinstance(e, torch.Tensor) else e for e in cache]
                out[i] = frames[j]
        return torch.stack(out)


def _stack(entries: list):
    """One cache entry for a group of worlds with the same layout."""
    if isinstance(entries[0], torch.Tensor):
        return torch.cat(entries)
    return entries[0]
