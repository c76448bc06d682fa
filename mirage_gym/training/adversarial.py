"""Adversarial fine-tuning of the tiny generator through its own few-step sampler.

    python -m mirage_gym.training.adversarial --out runs/adversarial [--minutes M] [--export-to DIR]

Why: the generator trained with MSE predicts the conditional mean, and 2-3 Euler steps from
noise stay near it, so views memory never showed come out as smooth fog. Here the shipped
generator is fine-tuned so that what it *samples* looks like a room:

- **through the sampler path**: every step runs the exported sampler (2 Euler steps from
  noise, remembered cells held as at inference) with gradients, so the loss scores exactly
  what the env shows;
- **a patch discriminator** (hinge loss, lazy R1 penalty) on the decoded RGB and depth code,
  conditioned on the memory mask (which cells memory ruled and which were invented). Its
  "real" frames are the true latent decoded by the same codec, with remembered cells held
  the same way, so codec blur and remembered cells give it nothing to judge: only what the
  generator invented and how it joins memory. Patch logits are weighted toward invented
  cells;
- **reconstruction kept where it should rule**: a low-pass latent loss (4x4-cell means,
  i.e. 16x16-pixel blocks: colour, layout and depth of the room, not its texture) on every
  cell, and the full-resolution latent MSE of the original training with a small weight,
  so covered views and the depth scale stay faithful while the adversary supplies detail;
- optionally, **the decoded depth's relative error** on invented pixels (what AbsRel counts),
  **more full-resolution MSE on invented cells next to memory** (one right answer there),
  **a diversity hinge** (two noises per condition must give different invented regions away
  from memory: a generator that ignores its noise paints the same strip at every step of a
  turn) and **local contrast** (each invented block's colour spread matched to the real
  frame's: no fog, and no cell-to-cell colour jitter bought to satisfy the hinge).

Why adversarial and not distribution matching (DMD): DMD needs a teacher whose samples are
the target distribution and a second "fake score" network trained online; our teacher *is*
the foggy MSE model (its many-step samples are not much sharper at this size), and a third
network forward per step costs CPU we do not have. An adversary trained against true
renders targets the data directly and costs one small conv net.

Every step draws its randomness from ``(seed, step)`` and checkpoints hold both networks,
both optimizers and the generator's EMA, so a resumed run continues exactly as an
uninterrupted one. Losses go to ``adversarial_log.csv`` (``d_real``, ``d_fake``, ``g_adv``,
``rec_low``, ``rec_full``, ``rec_near``, ``depth_rel``, ``contrast``, ``diversity``, ...); ``adversarial_runs.jsonl`` keeps
each run's configuration (a resume may change it), and an export writes both beside the
weights with a README of the commands that remake them. ``--ship`` exports as the shipped
default model.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mirage_gym.models.codec import DEPTH_FAR, DEPTH_NEAR
from mirage_gym.models.sampler import FlowMatchEulerSampler
from mirage_gym.training.loop import last_logged_row, save_checkpoint


@dataclass
class AdversarialConfig:
    """Sizes, weights and budget of the adversarial fine-tuning (defaults: the run reported
    in ``docs/adversarial.md``)."""

    sequences: int = 800  # training trajectories (seeds from TRAIN_SEED_BASE up, as the shipped model's)
    length: int = 16
    steps: int = 6000
    batch: int = 12
    sampler_steps: int = 2  # the sampler the exported model runs; training goes through it
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple = (0.0, 0.99)  # GAN-style Adam momentum
    adv_weight: float = 0.3  # generator's hinge loss weight
    rec_low_weight: float = 1.0  # 4x4-cell mean latent MSE, every cell
    rec_full_weight: float = 0.1  # full-resolution latent MSE (the original loss), every invented cell
    rec_near_weight: float = 0.0  # ... more of it on invented cells next to memory, where one answer is right
    invented_weight: float = 1.0  # patch weight of invented cells (remembered cells: 0.1)
    depth_weight: float = 0.0  # relative error of the decoded depth against the real frame's, invented surface pixels
    depth_pool: int = 1  # ... of depth_pool x depth_pool pixel means of the depth code (2: the layout, not its detail)
    contrast_weight: float = 0.0  # L1 of the decoded RGB's per-block standard deviation against the real frame's, invented blocks
    contrast_block: int = 8  # ... of contrast_block x contrast_block pixel blocks
    diversity_weight: float = 0.0  # hinge on how far two noises' samples of one condition differ, invented cells away from memory
    diversity_target: float = 0.5  # ... mean absolute latent difference asked for
    diversity_pool: int = 1  # ... of diversity_pool x diversity_pool cell means (2: regions must differ, not single cells)
    d_width: int = 32
    spectral_norm: bool = False  # SN on every D layer (tried first: D stayed at chance for 250 steps)
    r1_gamma: float = 1.0  # R1 penalty on real frames' mean logit (lazy, every r1_every steps, as StyleGAN2)
    r1_every: int = 4
    d_steps: int = 2  # discriminator updates per generator update (on the same real / fake batch)
    ema: float = 0.995
    warmup_d: int = 100  # steps the discriminator trains alone before the generator listens
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 1


class PatchDiscriminator(nn.Module):
    """A small conv net (optionally spectrally normalised): decoded frame (RGB, depth code, sky),
    its high-pass detail and the memory mask, (B, 10, 64, 64) -> (B, 1, 16, 16) patch logits,
    one per latent cell (receptive field about 30 px)."""

    def __init__(self, in_channels: int = 10, width: int = 32, spectral_norm: bool = False):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        w = width
        self.net = nn.Sequential(
            sn(nn.Conv2d(in_channels, w, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )
        # He init for leaky ReLU (torch's default shrinks activations layer by layer: logits of
        # about 0.003 that took hundreds of steps to grow, while the generator already listened)
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                weight = getattr(m, "parametrizations", None)
                target = m.parametrizations.weight.original if weight is not None else m.weight
                nn.init.kaiming_normal_(target, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, decoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``decoded``: the codec's raw 5 channels (RGB and depth code in [-1, 1], sky logit);
        ``mask`` (B, 1, h, w): cells memory showed."""
        image = torch.cat([decoded[:, :4], torch.tanh(decoded[:, 4:5])], 1)
        # the detail each pixel carries beyond its 3x3 mean (RGB and depth code), amplified: fog has
        # none; given outright, the net need not first learn to find it (it stayed at chance without)
        detail = 4 * (decoded[:, :4] - F.avg_pool2d(decoded[:, :4], 3, 1, 1, count_include_pad=False))
        return self.net(torch.cat([image, detail, F.interpolate(mask, size=decoded.shape[-2:])], 1))


def away_from_memory(invented: torch.Tensor) -> torch.Tensor:
    """Invented cells with no remembered neighbour (B, 1, h, w): the new strips of a turn, where
    variety is what makes the world move, not the holes and borders of a covered view, where
    one answer is right and variety only costs fidelity."""
    return _min_pool(invented, 3, stride=1, padding=1)


def _min_pool(x: torch.Tensor, kernel: int, stride: int | None = None, padding: int = 0) -> torch.Tensor:
    """1 where the whole window is 1, for masks: what is *wholly* invented."""
    return -F.max_pool2d(-x, kernel, stride, padding)


def _weighted_mean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` weighted by ``weight``, broadcast over ``x``'s channels (a (B, 1, h, w)
    mask weighs every channel of its cell)."""
    weight = weight.expand_as(x)
    return (x * weight).sum() / weight.sum().clamp(min=1e-6)


class AdversarialTrainer:
    """Holds the networks, optimizers and EMA; :meth:`train_step` is one G and D update.

    Args:
        generator: a :class:`~mirage_gym.models.generator.LatentGenerator` (fine-tuned in place).
        codec: the frozen :class:`~mirage_gym.models.codec.RGBDCodec` decoding samples.
        samples: :class:`~mirage_gym.training.generator.GeneratorSamples`.
        out: folder of the checkpoint ``adversarial.ckpt`` and log ``adversarial_log.csv``.
    """

    def __init__(self, generator, codec, samples, out: Path, cfg: AdversarialConfig):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.cfg, self.out = cfg, Path(out)
        self.generator, self.codec, self.samples = generator, codec, samples
        for p in codec.parameters():
            p.requires_grad_(False)
        codec.eval()
        torch.manual_seed(cfg.seed)
        self.discriminator = PatchDiscriminator(width=cfg.d_width, spectral_norm=cfg.spectral_norm)
        self.ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.sampler = FlowMatchEulerSampler(cfg.sampler_steps)
        self.train_sigmas = FlowMatchEulerSampler(3).sigmas()[:-1]  # generator_batch draws these; unused here
        self.step = 0
        self.seconds = 0.0
        self.ckpt_path = self.out / "adversarial.ckpt"
        self.log_path = self.out / "adversarial_log.csv"
        self._rows: list[dict] = []
        if self.ckpt_path.exists():
            state = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            generator.load_state_dict(state["generator"])
            self.discriminator.load_state_dict(state["discriminator"])
            self.ema.load_state_dict(state["ema"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.step, self.seconds = int(state["step"]), float(state["seconds"])

    # ------------------------------------------------------------------ one step

    def batch(self, rng: np.random.Generator):
        """Conditioning and the real latent: the true next latent with remembered cells held as a
        sample holds them (what the discriminator calls real)."""
        from mirage_gym.training.generator import generator_batch

        (_, _, context, memory, mask, memory_depth, camera), target = generator_batch(
            self.samples, rng, self.cfg.batch, self.train_sigmas)
        real = torch.where(mask > 0, memory, target)  # remembered cells held, as in a sample
        return (context, memory, mask, memory_depth, camera), real

    def sample(self, generator, cond, noise: torch.Tensor) -> torch.Tensor:
        """The exported sampler's output, with gradients: Euler steps from ``noise``,
        remembered cells held (``hold_memory``)."""
        context, memory, mask, memory_depth, camera = cond

        def predict(x, sigma):
            return generator.predict_x0(x, sigma, context, memory, mask, memory_depth, camera)

        return self.sampler.sample(predict, noise, known=memory, known_mask=mask)

    def train_step(self) -> dict:
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1_000_003 + self.step)
        rng = np.random.default_rng([cfg.seed, self.step])
        cond, real_latent = self.batch(rng)
        pairs = cfg.batch // 2 if cfg.diversity_weight > 0 else 0
        if pairs:  # the second half repeats the first half's conditions: two noises per condition
            cond = tuple(torch.cat([x[:pairs], x[:pairs], x[2 * pairs:]]) for x in cond)
            real_latent = torch.cat([real_latent[:pairs], real_latent[:pairs], real_latent[2 * pairs:]])
        mask = cond[2]
        patch_weight = cfg.invented_weight * (1 - mask) + 0.1 * mask
        noise = torch.randn_like(real_latent)
        self.generator.train()
        fake_latent = self.sample(self.generator, cond, noise)
        real = self.codec.decode_raw(real_latent).detach()
        fake = self.codec.decode_raw(fake_latent)

        # discriminator: hinge loss, real = the true latent decoded by the same codec; lazy R1
        for k in range(cfg.d_steps):
            r1_step = k == 0 and cfg.r1_gamma > 0 and self.step % cfg.r1_every == 0
            real.requires_grad_(r1_step)
            d_real = self.discriminator(real, mask)
            d_fake = self.discriminator(fake.detach(), mask)
            loss_d_real = _weighted_mean(F.relu(1 - d_real), patch_weight)
            loss_d_fake = _weighted_mean(F.relu(1 + d_fake), patch_weight)
            loss_d = loss_d_real + loss_d_fake
            if r1_step:
                # of each frame's mean logit (summed patch logits made R1 about 1000 and the
                # penalty, not the hinge, drove the discriminator)
                (grad,) = torch.autograd.grad(d_real.mean(dim=(1, 2, 3)).sum(), real, create_graph=True)
                r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
                loss_d = loss_d + 0.5 * cfg.r1_gamma * cfg.r1_every * r1
            elif k == 0:
                r1 = torch.zeros(())
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        real = real.detach()
        with torch.no_grad():  # how far apart D holds real and fake on invented cells, after its update
            inv = (1 - mask) > 0
            gap = float(self.discriminator(real, mask)[inv].mean() - self.discriminator(fake.detach(), mask)[inv].mean()) \
                if inv.any() else 0.0

        # generator: hinge adversarial loss + low-pass and (small) full reconstruction
        err = (fake_latent - real_latent) ** 2
        rec_low = F.mse_loss(F.avg_pool2d(fake_latent, 4), F.avg_pool2d(real_latent, 4))
        invented = 1 - mask
        rec_full = _weighted_mean(err, invented)
        near = invented - away_from_memory(invented)
        rec_near = _weighted_mean(err, near)
        depth_rel = self.depth_error(fake, real, invented)
        contrast = self.contrast_error(fake, real, invented)
        diversity = self.diversity(fake_latent, invented, pairs, cfg.diversity_pool)
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        g_adv = -_weighted_mean(self.discriminator(fake, mask), patch_weight)
        for p in self.discriminator.parameters():
            p.requires_grad_(True)
        adv_on = 1.0 if self.step >= cfg.warmup_d else 0.0
        total = (cfg.rec_low_weight * rec_low + cfg.rec_full_weight * rec_full + cfg.rec_near_weight * rec_near
                 + cfg.depth_weight * depth_rel + cfg.contrast_weight * contrast
                 + cfg.diversity_weight * F.relu(cfg.diversity_target - diversity) + adv_on * cfg.adv_weight * g_adv)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.generator.parameters(), 1.0)
        self.opt_g.step()
        self.ema.update_parameters(self.generator)
        self.step += 1
        with torch.no_grad():  # detail the sample carries: latent std over invented cells, fake vs real
            def spread(x):
                hp = x - F.interpolate(F.avg_pool2d(x, 2), scale_factor=2)
                return float(_weighted_mean(hp.pow(2), invented))
            detail = spread(fake_latent) / max(spread(real_latent), 1e-8)
        losses = {"d_real": loss_d_real, "d_fake": loss_d_fake, "g_adv": g_adv, "rec_low": rec_low,
                  "rec_full": rec_full, "rec_near": rec_near, "depth_rel": depth_rel, "contrast": contrast, "diversity": diversity, "total": total, "r1": r1}
        return {**{k: float(v.detach()) for k, v in losses.items()}, "detail_ratio": detail, "d_gap": gap}

    def depth_error(self, fake: torch.Tensor, real: torch.Tensor, invented: torch.Tensor) -> torch.Tensor:
        """Relative depth error |d - d_real| / d_real (what AbsRel counts) of the decoded depth,
        over ``depth_pool``-pixel means of the depth code, on invented pixels the real frame
        shows as surface (remembered cells are held and decode to the real depth). Why: the
        sampler's noise makes invented depth vary from sample to sample, and the MSE-trained
        generator's depth is the mean of latents, not the depth that errs least; and since an
        over-estimate costs more than an under-estimate, under doubt the best guess sits
        nearer than the median."""
        k = self.cfg.depth_pool
        weight = (real[:, 4:5] <= 0).float() * F.interpolate(invented, size=real.shape[-2:])
        codes = [F.avg_pool2d(x[:, 3:4].clamp(-1, 1), k) for x in (fake, real)]
        # depth code in [-1, 1] is log depth from DEPTH_NEAR to DEPTH_FAR: a ratio of depths
        ratio = torch.exp((codes[0] - codes[1]) * (0.5 * math.log(DEPTH_FAR / DEPTH_NEAR)))
        weight = F.avg_pool2d(weight, k)
        return _weighted_mean((ratio - 1).abs(), weight)

    def contrast_error(self, fake: torch.Tensor, real: torch.Tensor, invented: torch.Tensor) -> torch.Tensor:
        """Mean absolute difference between the per-block standard deviation of the decoded RGB
        and the real frame's, over blocks wholly invented. Why: a statistic of the block, not its
        pixels, so it does not reward the conditional mean as a pixel loss does; it asks for as
        much local contrast as the room has, no less (fog) and no more (colour jitter that
        a diversity term can buy)."""
        k = self.cfg.contrast_block

        def block_std(x):
            mean = F.avg_pool2d(x, k)
            return (F.avg_pool2d(x * x, k) - mean * mean).clamp(min=1e-6).sqrt()

        weight = _min_pool(F.interpolate(invented, size=fake.shape[-2:]), k)
        return _weighted_mean((block_std(fake[:, :3]) - block_std(real[:, :3])).abs(), weight)

    @staticmethod
    def diversity(fake_latent: torch.Tensor, invented: torch.Tensor, pairs: int, pool: int = 1) -> torch.Tensor:
        """Mean absolute difference, on invented cells away from memory, between the samples of
        the first ``pairs`` conditions and their repeats (other noise), of ``pool`` x ``pool``
        cell means. Why: a generator that ignores its noise paints the same strip at every
        step of a turn, and the invented world then repeats with the turn's period and looks
        still while the camera turns; asked of single cells (``pool`` 1), the cheapest answer
        is colour jitter from cell to cell, asked of regions it must vary what it draws."""
        if not pairs:
            return torch.zeros(())
        weight = away_from_memory(invented[:pairs])
        a, b = fake_latent[:pairs], fake_latent[pairs:2 * pairs]
        if pool > 1:  # regions wholly away from memory
            a, b, weight = F.avg_pool2d(a, pool), F.avg_pool2d(b, pool), _min_pool(weight, pool)
        return _weighted_mean((a - b).abs(), weight)

    # ------------------------------------------------------------------ run, save

    def run(self, steps: int | None = None, progress: bool = True, deadline: float | None = None) -> None:
        """Train until ``steps`` (default ``cfg.steps``) or the wall-clock ``deadline``
        (``time.time()``), checkpointing every ``checkpoint_every`` steps and at the end."""
        from tqdm import tqdm

        steps = self.cfg.steps if steps is None else steps
        bar = tqdm(total=steps, initial=self.step, desc="adversarial", disable=not progress)
        start = time.perf_counter() - self.seconds
        while self.step < steps and (deadline is None or time.time() < deadline):
            row = {"step": self.step + 1}
            losses = self.train_step()
            row["seconds"] = round(time.perf_counter() - start, 1)
            row.update({k: round(v, 5) for k, v in losses.items()})
            self._rows.append(row)
            bar.update(1)
            if self.step % 10 == 0:
                bar.set_postfix({k: row[k] for k in ("d_real", "d_fake", "g_adv", "rec_low")})
            if self.step % self.cfg.checkpoint_every == 0:
                self.seconds = time.perf_counter() - start
                self.checkpoint()
        self.seconds = time.perf_counter() - start
        self.checkpoint()
        bar.close()

    def checkpoint(self) -> None:
        """Write the checkpoint atomically and append the pending log rows."""
        state = {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                 "ema": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                 "step": self.step, "seconds": self.seconds}
        save_checkpoint(self.ckpt_path, state, self.log_path, self._rows)
        self._rows = []

    def ema_generator(self):
        """A copy of the generator carrying the EMA weights (what is exported)."""
        return copy.deepcopy(self.ema.module).eval()


def load_samples(out: Path, cfg: AdversarialConfig, codec, progress: bool = True):
    """Render the training trajectories and build generator samples once (cached in ``out``)."""
    from mirage_gym.training import TRAIN_SEED_BASE
    from mirage_gym.training.data import render_sequences
    from mirage_gym.training.generator import GeneratorSamples, build_samples

    path = out / "samples.pt"
    if path.exists():
        return GeneratorSamples(**torch.load(path, weights_only=True))
    data = render_sequences(range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + cfg.sequences), length=cfg.length,
                            seed=cfg.seed, progress=progress)
    samples = build_samples(codec, data, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(asdict(samples), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return samples


def train_adversarial(out: str | Path, cfg: AdversarialConfig | None = None, model: str | Path = "tiny",
                      progress: bool = True, deadline: float | None = None) -> Path:
    """Fine-tune ``model``'s generator (default: the shipped weights); returns the exported
    model directory ``out/model`` (EMA weights, ``cfg.sampler_steps`` sampler steps)."""
    from mirage_gym.models.backend import load_backend

    cfg = cfg or AdversarialConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    (out / "adversarial_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    base = load_backend(model)
    samples = load_samples(out, cfg, base.codec, progress)
    trainer = AdversarialTrainer(base.generator, base.codec, samples, out, cfg)
    with (out / "adversarial_runs.jsonl").open("a") as runs:  # a resume may change the config: keep each
        runs.write(json.dumps({"from_step": trainer.step, "model": str(model), **asdict(cfg)}) + "\n")
    trainer.run(progress=progress, deadline=deadline)
    return _export(base, trainer.ema_generator(), cfg.sampler_steps, out, out / "model")


def export_checkpoint(out: str | Path, dest: str | Path | None = None, model: str | Path = "tiny",
                      sampler_steps: int | None = None) -> Path:
    """Export the EMA generator of ``out``'s checkpoint (as it stands, e.g. while a run goes on)
    with ``model``'s codec to ``dest`` (default ``out/model``)."""
    from mirage_gym.models.backend import load_backend
    from torch.optim.swa_utils import AveragedModel

    out = Path(out)
    base = load_backend(model)
    state = torch.load(out / "adversarial.ckpt", map_location="cpu", weights_only=True)
    ema = AveragedModel(base.generator)
    ema.load_state_dict(state["ema"])
    steps = sampler_steps or json.loads((out / "adversarial_config.json").read_text())["sampler_steps"]
    return _export(base, ema.module.eval(), steps, out, Path(dest) if dest is not None else out / "model")


def _export(base, generator, sampler_steps: int, out: Path, dest: Path) -> Path:
    """``base``'s codec with the fine-tuned ``generator``, and beside the weights the runs that
    made them (``adversarial_runs.jsonl``) and a README with the commands that remake them."""
    from mirage_gym.models.backend import LatentWorldModel

    exported = FlowMatchEulerSampler(sampler_steps, base.sampler.shift)
    LatentWorldModel(base.codec, generator, exported, hold_memory=True).save_pretrained(dest)
    runs_path = out / "adversarial_runs.jsonl"
    if runs_path.exists():
        runs = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
        (dest / "adversarial_runs.jsonl").write_text(runs_path.read_text())
        (dest / "README.md").write_text(model_card(runs, _logged_steps(out / "adversarial_log.csv")))
    return dest


def _logged_steps(log: Path) -> int:
    return int(last_logged_row(log)["step"]) if log.exists() else 0


_NOT_WEIGHTS = ("steps", "threads", "checkpoint_every")  # settings that do not change the weights


def _is_flag(value) -> bool:
    """Config fields the command line sets (numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def model_card(runs: list[dict], steps: int) -> str:
    """The README of fine-tuned weights: the base model and one command per run (a resume that
    changed the configuration is a new run, from the step it started at)."""
    defaults = asdict(AdversarialConfig())
    lines = []
    for k, run in enumerate(runs):
        until = runs[k + 1]["from_step"] if k + 1 < len(runs) else steps
        flags = "".join(f" --{name.replace('_', '-')} {run[name]}" for name, value in defaults.items()
                        if _is_flag(value) and run.get(name, value) != value and name not in _NOT_WEIGHTS)
        lines.append(f"python -m mirage_gym.training.adversarial --out runs/adversarial --model {run.get('model', 'tiny')}"
                     f" --steps {until}{flags}")
    commands = "\n".join(lines)
    return f"""# The embedded default world model ("tiny"), adversarially fine-tuned

The tiny world model of `mirage-gym train tiny` (codec and generator trained with MSE on
procedural scenes), whose generator was then fine-tuned through its own {runs[-1]["sampler_steps"]}-step sampler
against a patch discriminator so that views memory never showed are drawn with structure
instead of fog (`mirage_gym/training/adversarial.py`; what it changes and the measurements:
`docs/adversarial.md`). The codec is unchanged. Every step draws its randomness from
(seed, step), so the same commands give the same weights.

Reproduce (CPU, one thread; each command resumes the checkpoint of the one before):

```bash
mirage-gym train tiny --out runs/tiny --threads 1
{commands.replace("--model tiny", "--model runs/tiny/model")}
python -m mirage_gym.training.adversarial --out runs/adversarial --model runs/tiny/model --ship
```

`adversarial_runs.jsonl` holds each run's whole configuration; the losses of every step are
logged to `runs/adversarial/adversarial_log.csv`. {steps} steps in all.
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="tiny", help="the model whose generator is fine-tuned")
    parser.add_argument("--minutes", type=float, default=None, help="stop (checkpointed, exportable) after this")
    parser.add_argument("--export-to", default=None, help="only export the checkpoint's EMA generator to this folder")
    parser.add_argument("--ship", action="store_true",
                        help="only export the checkpoint's EMA generator as the shipped default model")
    defaults = AdversarialConfig()
    for name, value in asdict(defaults).items():
        if _is_flag(value):
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(value), default=value)
    args = parser.parse_args(argv)
    if args.export_to or args.ship:
        dest = export_checkpoint(args.out, args.export_to or Path(args.out) / "model", args.model)
        if args.ship:
            from mirage_gym.models import shipped_model_path

            shutil.rmtree(shipped_model_path())
            shutil.copytree(dest, shipped_model_path())
            dest = shipped_model_path()
        print(f"model: {dest}")
        return
    cfg = AdversarialConfig(**{k: getattr(args, k) for k in asdict(defaults) if hasattr(args, k)})
    deadline = None if args.minutes is None else time.time() + 60 * args.minutes
    print(f"model: {train_adversarial(args.out, cfg, args.model, deadline=deadline)}")


if __name__ == "__main__":
    main()
