"""``mirage-gym train tiny`` end to end at toy size: every stage runs, resumes, and exports
a model directory that loads and drives a world."""

import csv

import numpy as np

from mirage_gym.cli import main as cli
from mirage_gym.models import LatentWorldModel
from mirage_gym.scenes import make_scene
from mirage_gym.training import TRAIN_SEED_BASE, TinyTrainConfig, train_tiny
from mirage_gym.training.data import render_sequences
from mirage_gym.training.loop import TrainLoop, last_logged_row, save_checkpoint
from mirage_gym.world import World, WorldConfig

TOY = dict(sequences=3, length=4, codec_width=8, codec_steps=3, codec_batch=4, generator_steps=3, generator_batch=4)


def test_sequences_are_valid_trajectories():
    data = render_sequences(range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + 3), length=5, progress=False)
    assert data.rgb.shape == (3, 5, 64, 64, 3) and data.depth.shape == (3, 5, 64, 64)
    assert data.static.dtype == bool and data.states.shape == (3, 5, 6)
    moves = np.abs(np.diff(data.states, axis=1)).sum(axis=-1)
    assert (moves > 0).mean() > 0.5  # the camera really moves along most steps


def test_training_runs_resumes_and_exports(tmp_path):
    model_dir = train_tiny(tmp_path, TinyTrainConfig(**TOY), progress=False)
    for name in ("codec", "generator"):
        assert (tmp_path / f"{name}.ckpt").exists()
        log = (tmp_path / f"{name}_log.csv").read_text().splitlines()
        assert log[0].startswith("step,seconds") and len(log) == 1 + 3
    model = LatentWorldModel.from_pretrained(model_dir)
    world = World(model, WorldConfig())
    r = make_scene(5).render(np.eye(4), 64, 64)
    world.reset(0, r.rgb, r.depth)
    assert world.step(np.zeros((1, 6))).rgb.shape == (1, 64, 64, 3)
    # a second run resumes from the finished checkpoints instead of training again
    before = (tmp_path / "generator_log.csv").read_text()
    train_tiny(tmp_path, TinyTrainConfig(**TOY), progress=False)
    assert (tmp_path / "generator_log.csv").read_text() == before


def test_learning_rate_warms_up_then_decays(tmp_path):
    import torch

    loop = TrainLoop("x", torch.nn.Linear(2, 2), tmp_path, steps=1000, lr=1.0, warmup=10, progress=False)
    lrs = [loop.learning_rate(s) for s in (0, 9, 10, 500, 999)]
    assert lrs[0] < lrs[1] == 1.0 and lrs[2] == 1.0 and 0.1 < lrs[3] < 1.0 and abs(lrs[4] - 0.1) < 1e-3


def test_cli_train_parses(tmp_path, monkeypatch):
    import mirage_gym.training as training

    seen = {}
    monkeypatch.setattr(training, "train_tiny", lambda out, cfg: seen.update(out=out, cfg=cfg) or tmp_path)
    cli(["train", "tiny", "--out", str(tmp_path), "--codec-steps", "7"])
    assert seen["cfg"].codec_steps == 7 and seen["cfg"].generator_steps == TinyTrainConfig().generator_steps


def test_a_resume_that_logs_a_new_loss_keeps_the_log_one_table(tmp_path):
    ckpt, log = tmp_path / "run.ckpt", tmp_path / "run_log.csv"
    save_checkpoint(ckpt, {"step": 1}, log, [{"step": 1, "loss": 0.5}])
    save_checkpoint(ckpt, {"step": 2}, log, [{"step": 2, "loss": 0.4, "new_loss": 0.1}])  # resumed with a new loss
    save_checkpoint(ckpt, {"step": 3}, log, [{"step": 3, "loss": 0.3}])  # ... and back without it
    rows = list(csv.DictReader(log.open()))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert [r["new_loss"] for r in rows] == ["", "0.1", ""] and [r["loss"] for r in rows] == ["0.5", "0.4", "0.3"]
    assert last_logged_row(log)["loss"] == "0.3"
