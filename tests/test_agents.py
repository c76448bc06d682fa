"""The agent programs: scripted policies, the evaluation report and PPO's smoke run.

All on the transparent stand-in model, passed through the programs' Python API.
"""

import json
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds agents/

import mirage_gym  # noqa: F401  (registers the ids)
from agents import parse_args
from agents import evaluate as evaluation
from agents.policies import AGENTS, TURNS, FrontierAgent, RandomWalkAgent
from mirage_gym.geometry import Action
from stand_in import PoolingBackend

STEPS = 20


def run(env_id, name, seed=0, steps=STEPS):
    env = gym.make(env_id, model=PoolingBackend(), max_episode_steps=steps)
    agent = AGENTS[name](env.action_space)
    agent.reset(seed=seed)
    obs, info = env.reset(seed=seed)
    actions, truncated = [], False
    while not truncated:
        action = agent.act(obs, info)
        assert env.action_space.contains(action), action
        actions.append(np.asarray(action).tolist())
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated
    env.close()
    return actions, info


@pytest.mark.parametrize("name", list(AGENTS))
def test_every_agent_plays_a_seeded_episode(name):
    actions, info = run("MirageWorld-v0", name)
    assert len(actions) == STEPS
    assert info["coverage_voxels"] > 0
    assert run("MirageWorld-v0", name)[0] == actions  # same seed, same choices


@pytest.mark.parametrize("name", ["frontier", "random_walk", "random"])
def test_agents_drive_the_continuous_id(name):
    actions, _ = run("MirageWorldContinuous-v0", name)
    assert all(len(a) == 6 for a in actions)
    if name != "random":  # scripted moves are unit 6-vectors of the named actions
        assert all(sorted(np.abs(a))[-2:] == [0.0, 1.0] for a in actions)


def test_random_walk_does_not_retry_a_blocked_move():
    agent = RandomWalkAgent(repeat_prob=1.0)  # would always repeat a move that went through
    blocked = {"collision": True, "novelty": 0.0, "new_voxels": 0}
    choices = set()
    for seed in range(30):
        agent.reset(seed=seed)
        agent.last = Action.MOVE_FORWARD
        choices.add(agent.act(None, blocked))
    assert Action.MOVE_FORWARD not in choices and len(choices) > 1


def test_frontier_turns_away_when_blocked_and_advances_on_new_voxels():
    agent = FrontierAgent()
    agent.reset(seed=0)
    info = {"collision": False, "novelty": 0.9, "new_voxels": 50, "pose": np.eye(4)}
    assert agent.act(None, {**info, "novelty": 1.0}) in TURNS  # a fresh episode scans first
    assert agent.act(None, info) == Action.MOVE_FORWARD  # a novel view with new voxels: go
    assert agent.act(None, info) == Action.MOVE_FORWARD  # still revealing voxels: keep going
    assert agent.act(None, {**info, "collision": True}) in TURNS


def test_quick_evaluation_writes_a_well_formed_report(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "photo.png", image)
    args = parse_args(evaluation.Args, ["--quick", "--out", str(tmp_path / "report"), "--image", str(tmp_path / "photo.png")])
    report = evaluation.evaluate(args, env_kwargs={"model": PoolingBackend()})
    out = tmp_path / "report"

    assert json.loads((out / "report.json").read_text()) == report
    assert report["config"]["sources"] == ["seed 0", "seed 1", "image photo.png"]
    assert set(report["agents"]) == set(AGENTS)
    steps = report["config"]["steps"]
    for a in report["agents"].values():
        for key in ("coverage_voxels", "reward", "collisions", "steps_per_second", "memory_points"):
            assert isinstance(a[key]["mean"], float) and isinstance(a[key]["std"], float)
            assert len(a[key]["per_episode"]) == 3
        assert len(a["coverage_curve"]["mean"]) == steps + 1
        assert a["coverage_curve"]["mean"][-1] >= a["coverage_curve"]["mean"][0] > 0
        assert a["steps_per_second"]["mean"] > 0
    loop = report["loop_closure"]
    assert loop["steps"] == 24 and loop["turn_step_deg"] == 15.0
    for key in ("with_memory", "without_memory"):
        assert 0 < loop[key]["psnr"]["mean"] <= loop["psnr_cap_db"]
        assert -1 <= loop[key]["ssim"]["mean"] <= 1
    assert loop["psnr_gain_db"] > 0  # the stand-in copies memory: coming back must look closer

    assert "| agent |" in (out / "report.md").read_text()
    for png in report["files"]["plots"].values():
        picture = iio.imread(out / png)
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] in (3, 4)
        assert picture.shape[0] >= 100 and picture.shape[1] >= 100 and picture.std() > 0
    assert len(report["files"]["videos"]) == len(AGENTS) + 1
    for video in report["files"]["videos"]:
        assert (out / video).stat().st_size > 0


def test_ppo_smoke_trains_saves_and_reloads(tmp_path):
    from stable_baselines3 import PPO

    from agents import ppo

    args = parse_args(ppo.Args, ["--smoke", "--out", str(tmp_path)])
    summary = ppo.train(args, env_kwargs={"model": PoolingBackend()})
    assert summary["timesteps"] >= 256
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ppo_128_steps.zip", "ppo_256_steps.zip"]
    assert (tmp_path / "logs" / "from_step_0" / "progress.csv").stat().st_size > 0

    model = PPO.load(tmp_path / "model.zip", device="cpu")
    env = gym.make("MirageWorld-v0", model=PoolingBackend())
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))

    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["policies"]) == {"ppo", "random", "frontier"}
    assert result["episode_steps"] == 32
    for policy in result["policies"].values():
        assert policy["coverage_voxels"]["mean"] > 0
