"""Adversarial fine-tuning at toy size: steps run with finite losses, a resumed run equals an
uninterrupted one, a seed fixes the result, and the export loads and drives a world."""

import csv
import math

import numpy as np
import pytest
import torch

from mirage_gym.models import LatentWorldModel
from mirage_gym.models.codec import DEPTH_FAR, DEPTH_NEAR, new_codec
from mirage_gym.scenes import make_scene
from mirage_gym.training import TRAIN_SEED_BASE
from mirage_gym.training.adversarial import AdversarialConfig, AdversarialTrainer, PatchDiscriminator, away_from_memory
from mirage_gym.training.data import render_sequences
from mirage_gym.training.generator import build_samples, new_generator
from mirage_gym.world import World, WorldConfig

TOY = dict(steps=3, batch=2, warmup_d=1, checkpoint_every=2, d_width=4, r1_every=2)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    codec = new_codec(8).eval()
    data = render_sequences(range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + 2), length=4, progress=False)
    samples = build_samples(codec, data, progress=False)
    return codec, samples


def _trainer(toy, out, **overrides):
    codec, samples = toy
    generator = new_generator(codec.latent_channels, seed=0, layers=2, head_dim=8, vace_layers=(0,))
    torch.nn.init.normal_(generator.transformer.proj_out.weight, std=0.01)  # a non-trivial residual
    return AdversarialTrainer(generator, codec, samples, out, AdversarialConfig(**{**TOY, **overrides}))


def _weights(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.generator.parameters()])


def test_runs_resumes_and_is_seeded(toy, tmp_path):
    whole = _trainer(toy, tmp_path / "whole")
    whole.run(progress=False)
    rows = list(csv.DictReader((tmp_path / "whole" / "adversarial_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for key in ("d_real", "d_fake", "g_adv", "rec_low", "rec_full", "rec_near", "total"):
        assert all(np.isfinite(float(r[key])) for r in rows)

    part = _trainer(toy, tmp_path / "part")
    part.run(steps=2, progress=False)
    resumed = _trainer(toy, tmp_path / "part")  # loads the checkpoint of step 2
    assert resumed.step == 2
    resumed.run(progress=False)
    assert torch.equal(_weights(resumed), _weights(whole))
    assert torch.equal(resumed.ema.module.transformer.proj_out.weight, whole.ema.module.transformer.proj_out.weight)

    other_seed = _trainer(toy, tmp_path / "seed1", seed=1)
    other_seed.run(progress=False)
    assert not torch.equal(_weights(other_seed), _weights(whole))


def test_export_drives_a_world(toy, tmp_path):
    codec, _ = toy
    trainer = _trainer(toy, tmp_path, steps=1)
    trainer.run(progress=False)
    from mirage_gym.models.sampler import FlowMatchEulerSampler

    LatentWorldModel(codec, trainer.ema_generator(), FlowMatchEulerSampler(2)).save_pretrained(tmp_path / "model")
    world = World(LatentWorldModel.from_pretrained(tmp_path / "model"), WorldConfig())
    r = make_scene(5).render(np.eye(4), 64, 64)
    world.reset(0, r.rgb, r.depth)
    assert world.step(np.zeros((1, 6))).rgb.shape == (1, 64, 64, 3)


def test_discriminator_scores_a_patch_per_latent_cell():
    d = PatchDiscriminator(width=4)
    logits = d(torch.zeros(2, 5, 64, 64), torch.ones(2, 1, 16, 16))
    assert logits.shape == (2, 1, 16, 16)


def test_depth_error_scores_invented_surface_only(toy, tmp_path):
    trainer = _trainer(toy, tmp_path, depth_pool=2)
    real = torch.zeros(1, 5, 64, 64)
    real[:, 4, :, 32:] = 5.0  # the right half is sky
    invented = torch.zeros(1, 1, 16, 16)
    invented[..., :8, :] = 1  # the top half was invented, the bottom held from memory
    assert float(trainer.depth_error(real.clone(), real, invented)) == 0.0
    off = real.clone()
    off[:, 3, 32:] += 0.5  # wrong depth where memory ruled ...
    off[:, 3, :32, 32:] += 0.5  # ... and under the sky
    assert float(trainer.depth_error(off, real, invented)) == 0.0
    off[:, 3, :32, :32] += 0.2  # depth too far on invented surface: its relative error
    too_far = float(trainer.depth_error(off, real, invented))
    assert too_far == pytest.approx(math.exp(0.1 * math.log(DEPTH_FAR / DEPTH_NEAR)) - 1, rel=1e-4)
    off[:, 3, :32, :32] -= 0.4  # as far too near: a smaller error, as AbsRel counts it
    assert float(trainer.depth_error(off, real, invented)) == pytest.approx(1 - math.exp(-0.1 * math.log(DEPTH_FAR / DEPTH_NEAR)), rel=1e-4)


def test_model_card_gives_one_command_per_run():
    from dataclasses import asdict

    from mirage_gym.training.adversarial import model_card

    first = {"from_step": 0, "model": "tiny", **asdict(AdversarialConfig())}
    second = {**first, "from_step": 1270, "depth_weight": 1.0, "rec_full_weight": 0.3, "threads": 2}
    card = model_card([first, second], steps=2000)
    commands = [line for line in card.splitlines() if line.startswith("python -m mirage_gym.training.adversarial")]
    assert commands[0].endswith("--model runs/tiny/model --steps 1270")  # defaults: no flags
    assert commands[1].endswith("--steps 2000 --rec-full-weight 0.3 --depth-weight 1.0")  # threads change nothing
    assert commands[2].endswith("--ship")


def test_diversity_compares_two_noises_away_from_memory():
    fake = torch.zeros(4, 2, 8, 8)  # pairs = 2: samples 2, 3 repeat the conditions of 0, 1
    invented = torch.zeros(4, 1, 8, 8)
    invented[:, :, :, 5:] = 1  # a 3-cell strip at the right edge: its two inner columns lie away from memory
    fake[2, :, :, 4] = 7.0  # a difference on a remembered cell ...
    fake[2, :, :, 5] = 7.0  # ... and on the strip's cells next to memory: neither counts
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=2)) == 0.0
    fake[2, :, :, 6:] = 1.0  # the inner cells of sample 0 differ by 1 from its repeat; sample 1's not at all
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=2)) == pytest.approx(0.5)
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=0)) == 0.0


def test_pooled_diversity_asks_regions_to_differ_not_cells():
    fake = torch.zeros(2, 1, 8, 8)  # pairs = 1: sample 1 repeats sample 0's condition
    invented = torch.ones(2, 1, 8, 8)
    fake[1, 0] = torch.tensor([[1.0, -1.0] * 4, [-1.0, 1.0] * 4] * 4)  # cell-to-cell jitter, no region differs
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=1)) == pytest.approx(1.0)
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=1, pool=2)) == pytest.approx(0.0)
    fake[1, 0] = 1.0  # every region differs
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=1, pool=2)) == pytest.approx(1.0)
    invented[:, :, :, :2] = 0  # remembered columns 0-1: the regions touching them (columns 0-3) do not count
    fake[1, 0, :, 4:] = 3.0
    assert float(AdversarialTrainer.diversity(fake, invented, pairs=1, pool=2)) == pytest.approx(3.0)


def test_contrast_error_scores_block_statistics_of_invented_blocks(toy, tmp_path):
    trainer = _trainer(toy, tmp_path, contrast_block=8)
    real = torch.zeros(1, 5, 16, 16)
    real[:, :3, :, ::2] = 0.5  # stripes: every 8x8 block has std 0.25 in each colour
    invented = torch.zeros(1, 1, 4, 4)
    invented[..., 2:] = 1  # the right half of the frame: its two blocks are wholly invented
    assert float(trainer.contrast_error(real.clone(), real, invented)) == pytest.approx(0.0, abs=2e-3)
    fog = torch.full_like(real, 0.25)  # the right mean, no contrast
    assert float(trainer.contrast_error(fog, real, invented)) == pytest.approx(0.25, abs=2e-3)
    jitter = real.clone()
    jitter[:, :3, :, 1::2] = -0.5  # twice the contrast
    assert float(trainer.contrast_error(jitter, real, invented)) == pytest.approx(0.25, abs=2e-3)
    fog[..., :8] = real[..., :8]  # the left (remembered) half differing or not changes nothing
    assert float(trainer.contrast_error(fog, real, invented)) == pytest.approx(0.25, abs=2e-3)


def test_invented_cells_split_into_next_to_memory_and_away():
    invented = torch.zeros(1, 1, 8, 8)
    invented[..., 5:] = 1  # a strip at the right edge; column 5 touches memory
    away = away_from_memory(invented)
    assert away[..., 6:].eq(1).all() and away[..., :6].eq(0).all()
    assert torch.equal(away_from_memory(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))  # nothing remembered


def test_near_memory_reconstruction_adds_to_the_loss(toy, tmp_path):
    base = _trainer(toy, tmp_path / "a", warmup_d=10).train_step()
    near = _trainer(toy, tmp_path / "b", warmup_d=10, rec_near_weight=2.0).train_step()
    assert base["rec_near"] == near["rec_near"] > 0  # same seed, same sample: the term is measured either way
    assert near["total"] == pytest.approx(base["total"] + 2.0 * base["rec_near"], rel=1e-4)


def test_diversity_step_runs_with_paired_noises(toy, tmp_path):
    trainer = _trainer(toy, tmp_path, batch=4, diversity_weight=1.0)
    losses = trainer.train_step()
    assert np.isfinite(losses["diversity"]) and losses["diversity"] > 0  # other noise, other sample
