"""``mirage-gym train tiny``: reproduce the embedded default model from scratch on CPU.

Stages, each resumable (re-run the same command after an interruption):

1. render training sequences from procedural scenes (seeds from ``TRAIN_SEED_BASE`` up,
   disjoint from the env's and the benchmarks' seeds, which stay below it),
2. train the RGB-D codec, then fit its per-channel latent statistics,
3. build generator samples: encode the sequences, grow a ``LatentSpatialMemory`` along each
   one and project it onto every next pose,
4. train the VACE-conditioned Wan transformer,
5. export the model directory (safetensors + JSON) that ``load_backend`` reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_gym import constants

TRAIN_SEED_BASE = constants.TRAIN_SEED_BASE  # training scenes; every evaluation uses seeds below this


@dataclass
class TinyTrainConfig:
    """Sizes and budgets of ``mirage-gym train tiny`` (defaults: the shipped model)."""

    sequences: int = 1200  # training trajectories (one scene each)
    length: int = 16  # frames per trajectory
    codec_width: int = 64
    codec_patch: int = 4
    codec_steps: int = 800
    codec_batch: int = 32
    codec_lr: float = 1e-3
    generator_steps: int = 6000
    generator_head_dim: int = 24  # 4 heads: width 96 (a third fewer FLOPs per sample than 128)
    generator_batch: int = 32
    generator_lr: float = 1e-3
    seed: int = 0
    threads: int = 2


def _load_or_render(out: Path, cfg: TinyTrainConfig, progress: bool):
    from mirage_gym.training.data import Sequences, render_sequences

    folder = out / "sequences"
    names = ("rgb", "depth", "static", "states")
    if all((folder / f"{n}.npy").exists() for n in names):
        return Sequences(*(np.load(folder / f"{n}.npy") for n in names))
    seeds = range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + cfg.sequences)
    data = render_sequences(seeds, length=cfg.length, seed=cfg.seed, progress=progress)
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        np.save(folder / f"{n}.npy", getattr(data, n))
    return data


def train_codec_stage(out: Path, cfg: TinyTrainConfig, data, progress: bool = True):
    """Train (or resume) the codec and return it with fitted latent statistics."""
    from mirage_gym.models.codec import new_codec
    from mirage_gym.training.codec import fit_latent_stats, init_codec, train_codec
    from mirage_gym.training.loop import TrainLoop

    torch.manual_seed(cfg.seed)
    codec = new_codec(cfg.codec_width, patch_size=cfg.codec_patch)
    init_codec(codec, data, seed=cfg.seed)  # a resumed run's checkpoint overwrites it
    loop = TrainLoop("codec", codec, out, cfg.codec_steps, cfg.codec_lr, seed=cfg.seed, progress=progress)
    if not loop.done:
        train_codec(codec, data, loop, batch=cfg.codec_batch)
    codec.eval()
    fit_latent_stats(codec, data, seed=cfg.seed)
    return codec


def train_tiny(out: str | Path, cfg: TinyTrainConfig | None = None, stages: str = "all", progress: bool = True) -> Path:
    """Run the stages (``"codec"`` stops after the codec); returns the model directory."""
    cfg = cfg or TinyTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    start = time.perf_counter()
    data = _load_or_render(out, cfg, progress)
    codec = train_codec_stage(out, cfg, data, progress)
    if stages == "codec":
        return out
    from mirage_gym.training.generator import train_generator_stage

    model_dir = train_generator_stage(out, cfg, data, codec, progress)
    seconds = round(time.perf_counter() - start, 1)
    (out / "train_time.json").write_text(json.dumps({"seconds": seconds}))
    (model_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    stages = {name: _logged_seconds(out / f"{name}_log.csv") for name in ("codec", "generator")}
    (model_dir / "README.md").write_text(model_card(cfg, seconds, stages))
    return model_dir


def _logged_seconds(log: Path) -> float:
    """Training time of a stage, from the last row of its loss log (survives resumes)."""
    from mirage_gym.training.loop import last_logged_row

    return float(last_logged_row(log)["seconds"])


def model_card(cfg: TinyTrainConfig, seconds: float, stages: dict[str, float]) -> str:
    """The README written beside the weights: what they are and the command that remakes them."""
    defaults = TinyTrainConfig()
    flags = "".join(
        f" --{name.replace('_', '-')} {getattr(cfg, name)}"
        for name in ("sequences", "codec_steps", "generator_steps", "generator_head_dim", "seed", "threads")
        if getattr(cfg, name) != getattr(defaults, name)
    )
    return f"""# The embedded default world model ("tiny")

An RGB-D codec (diffusers `AutoencoderTiny` behind a {cfg.codec_patch}x{cfg.codec_patch} pixel unshuffle,
64x64 frames to a 16x16x16 latent grid, width {cfg.codec_width}) and a VACE-conditioned
`WanVACETransformer3DModel` generator (memory, mask, memory depth and camera rays in the control
branch; camera motion as tokens), trained from scratch on procedural scenes (seeds from
{TRAIN_SEED_BASE} up, disjoint from every evaluation seed). All files are safetensors + JSON;
`mirage_model.json` holds the latent statistics and sampler settings, `train_config.json`
the exact training configuration.

Reproduce (CPU, resumable: re-run the same command after an interruption):

```bash
mirage-gym train tiny --out runs/tiny{flags} --ship
```

Stages: render {cfg.sequences} trajectories of {cfg.length} frames; codec {cfg.codec_steps} steps at batch
{cfg.codec_batch}; generator samples (a world grown along each trajectory); generator
{cfg.generator_steps} steps at batch {cfg.generator_batch}; export. Losses are logged to
`runs/tiny/codec_log.csv` and `runs/tiny/generator_log.csv`. Training took {stages["codec"] / 60:.0f} minutes for
the codec and {stages["generator"] / 60:.0f} minutes for the generator on {cfg.threads} CPU thread(s); the last
invocation took {seconds / 60:.0f} minutes in all (stages already finished, such as the rendered
trajectories, about 2 minutes, are cached and resumed between invocations).
"""
