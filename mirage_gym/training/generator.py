"""Stages 3-5 of ``mirage-gym train tiny``: generator samples, generator training, export.

Samples are made by running the real world core with a teacher-forcing backend: the
world reads its memory, "generates" the true next latent, decodes it and writes it back
exactly as at inference (decoded depth, sky filter, cells copied from memory not
rewritten, the residual check). So the generator trains on the memory readouts it will
see when it runs, not on an idealised copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mirage_gym.models.backend import LatentWorldModel
from mirage_gym.models.codec import RGBDCodec
from mirage_gym.models.generator import CameraTokens, LatentGenerator, tiny_transformer_config, zero_output_projections
from mirage_gym.models.sampler import FlowMatchEulerSampler
from mirage_gym.training.data import Sequences
from mirage_gym.training.loop import TrainLoop
from mirage_gym.world import World, WorldConfig, to_image_tensor

SAMPLER_STEPS = 3  # the noise levels the generator trains on
# the sampler steps the exported model runs: 2 is within 0.15 dB of 3 in fidelity and a third
# faster (32.5 vs 24.6 steps/s under uniform random actions), at sharpness 0.83 instead of 0.87
EXPORT_SAMPLER_STEPS = 2
MEMORY_CELL_WEIGHT = 0.25  # loss weight of cells memory covers, relative to the rest


@dataclass
class GeneratorSamples:
    """Per (sequence, step t >= 1): memory projected at pose t before frame t was written."""

    latents: torch.Tensor  # (N, T, C, h, w) true latents of every frame
    memory: torch.Tensor  # (N, T-1, C, h, w) float16
    mask: torch.Tensor  # (N, T-1, 1, h, w) bool
    memory_depth: torch.Tensor  # (N, T-1, 1, h, w) float16, inf where empty
    camera: torch.Tensor  # (N, T-1, 4, 4) pose of frame t in the camera frame of t-1


class _TeacherForcing:
    """A world backend whose generator returns the true next latent and records its inputs."""

    def __init__(self, codec: RGBDCodec):
        self.codec = codec
        self.latent_channels = codec.latent_channels
        self.downsample = codec.downsample
        self.next_latents = None
        self.record = None

    def encode(self, rgb, depth):
        return self.codec.encode(rgb, depth)

    def decode(self, latents):
        return self.codec.decode(latents)

    def generate(self, context, memory, mask, memory_depth, camera, noise):
        self.record = (memory.half(), mask.bool(), memory_depth.half(), camera.float())
        return self.next_latents


@torch.no_grad()
def build_samples(codec: RGBDCodec, data: Sequences, worlds: int = 48, progress: bool = True) -> GeneratorSamples:
    """Encode every frame and record the memory readouts of a world growing along each sequence."""
    n, t = data.rgb.shape[:2]
    teacher = _TeacherForcing(codec)
    latents, memory, mask, depth, camera = [], [], [], [], []
    for start in tqdm(range(0, n, worlds), desc="generator samples", disable=not progress):
        idx = np.arange(start, min(n, start + worlds))
        world = World(teacher, WorldConfig(), num_worlds=len(idx))
        rgb = to_image_tensor(data.rgb[idx].reshape(-1, *data.rgb.shape[2:]))
        true_depth = torch.from_numpy(data.depth[idx].reshape(-1, 1, *data.depth.shape[2:]))
        lat = torch.cat([codec.encode(r, d) for r, d in zip(rgb.split(256), true_depth.split(256))])
        lat = lat.view(len(idx), t, *lat.shape[1:])
        for w, i in enumerate(idx):
            world.reset(w, data.rgb[i, 0], data.depth[i, 0], data.static[i, 0])
        steps = []
        for k in range(1, t):
            teacher.next_latents = lat[:, k]
            world._advance(data.states[idx, k])
            steps.append(teacher.record)
        latents.append(lat)
        for store, part in zip((memory, mask, depth, camera), zip(*steps)):
            store.append(torch.stack(part, 1))
    return GeneratorSamples(torch.cat(latents), *(torch.cat(s) for s in (memory, mask, depth, camera)))


def generator_batch(samples: GeneratorSamples, rng: np.random.Generator, batch: int, sigmas: torch.Tensor):
    """One training batch: inputs of ``predict_x0`` and the target, with the augmentations
    that make the generator robust at inference (noised context, dropped memory)."""
    n, t1 = samples.memory.shape[:2]
    i, k = torch.from_numpy(rng.integers(n, size=batch)), torch.from_numpy(rng.integers(t1, size=batch))
    target = samples.latents[i, k + 1]
    context = samples.latents[i, k]
    memory = samples.memory[i, k].float()
    mask = samples.mask[i, k].float()
    memory_depth = samples.memory_depth[i, k].float()
    camera = samples.camera[i, k]
    # context noise: inference context is the model's own previous output
    noise_level = torch.from_numpy(rng.uniform(0, 0.3, size=(batch, 1, 1, 1)) * (rng.random((batch, 1, 1, 1)) < 0.5))
    context = context + noise_level.float() * torch.randn_like(context)
    # memory dropout: all of it (the no-memory mode) or a random rectangle (teaches inpainting)
    drop = torch.ones_like(mask)
    u = rng.random(batch)
    h, w = mask.shape[-2:]
    for b in np.flatnonzero(u < 0.3):
        if u[b] < 0.1:
            drop[b] = 0
        else:
            r0, c0 = rng.integers(h), rng.integers(w)
            drop[b, :, r0 : r0 + rng.integers(3, h // 2), c0 : c0 + rng.integers(3, w // 2)] = 0
    mask = mask * drop
    memory = memory * mask
    memory_depth = torch.where(mask > 0, memory_depth, torch.full_like(memory_depth, float("inf")))
    # noise levels: half uniform, half the sampler's own steps
    uniform = torch.from_numpy(rng.uniform(0.02, 1.0, size=batch)).float()
    scheduled = sigmas[torch.from_numpy(rng.integers(len(sigmas), size=batch))]
    sigma = torch.where(torch.from_numpy(rng.random(batch) < 0.5), uniform, scheduled)
    # remembered cells are noised from the memory itself: the sampler holds them there
    # (hold_memory), so that is what the network sees at every step of inference
    clean = torch.where(mask > 0, memory, target)
    noisy = (1 - sigma.view(-1, 1, 1, 1)) * clean + sigma.view(-1, 1, 1, 1) * torch.randn_like(target)
    return (noisy, sigma, context, memory, mask, memory_depth, camera), target


def new_generator(latent_channels: int, seed: int = 0, **sizes) -> LatentGenerator:
    """A fresh tiny generator whose residual starts at zero (it copies memory); ``sizes``
    override :func:`tiny_transformer_config`'s."""
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(seed)
    config = tiny_transformer_config(latent_channels, **sizes)
    transformer = WanVACETransformer3DModel(**config)
    zero_output_projections(transformer)
    return LatentGenerator(transformer, CameraTokens(config["text_dim"]))


def train_generator_stage(out: Path, cfg, data: Sequences, codec: RGBDCodec, progress: bool = True) -> Path:
    """Build samples, train (or resume) the generator, export the model directory."""
    samples = build_samples(codec, data, progress=progress)
    generator = new_generator(codec.latent_channels, cfg.seed, head_dim=cfg.generator_head_dim)
    loop = TrainLoop("generator", generator, out, cfg.generator_steps, cfg.generator_lr, seed=cfg.seed, progress=progress)
    sampler = FlowMatchEulerSampler(SAMPLER_STEPS)
    sigmas = sampler.sigmas()[:-1]
    for rng in loop:
        inputs, target = generator_batch(samples, rng, cfg.generator_batch, sigmas)
        x0 = generator.predict_x0(*inputs)
        err = (x0 - target) ** 2
        valid = inputs[4]
        # the sampler holds remembered cells (hold_memory), so what the generator invents
        # around them is what shows; remembered cells keep a smaller weight so the
        # residual mode (hold_memory=False) stays usable
        weight = 1.0 - (1.0 - MEMORY_CELL_WEIGHT) * valid
        losses = {
            "total": (err * weight).sum() / (weight.sum() * err.shape[1]),
            "in_memory": (err * valid).sum() / (valid.sum() * err.shape[1]).clamp(min=1),
            "outside": (err * (1 - valid)).sum() / ((1 - valid).sum() * err.shape[1]).clamp(min=1),
        }
        loop.update(losses)
    model_dir = out / "model"
    exported = FlowMatchEulerSampler(EXPORT_SAMPLER_STEPS, sampler.shift)
    LatentWorldModel(codec, generator.eval(), exported, hold_memory=True).save_pretrained(model_dir)
    return model_dir
