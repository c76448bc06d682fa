"""PPO (stable-baselines3, ``CnnPolicy``) on the explore task, then a comparison with scripted agents.

    python -m agents.ppo --smoke --out runs/ppo-smoke                 # a few hundred steps
    python -m agents.ppo --total-timesteps 200000 --num-envs 8 --out runs/ppo
    python -m agents.ppo --resume runs/ppo/checkpoints/ppo_100000_steps.zip --total-timesteps 400000 --out runs/ppo

Training runs on the batched vector env (:func:`mirage_gym.sb3.make_sb3_vec_env`: one
generator forward for all worlds). The output folder gets ``args.json``, ``checkpoints/``
(every ``--checkpoint-every`` steps), ``logs/from_step_N/`` (SB3's logger, one folder per
training session: stdout + ``progress.csv``, plus TensorBoard if it is installed), the final ``model.zip`` and ``eval.json``: mean
coverage voxels per episode of the trained policy, ``RandomAgent`` and ``FrontierAgent``
over the same seeds and the same number of steps per episode.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize

import mirage_gym  # noqa: F401  (registers the ids)
from mirage_gym.sb3 import make_sb3_vec_env

from . import parse_args
from .evaluate import Source, make_env, model_name, run_explore_episode, stats
from .policies import FrontierAgent, RandomAgent


@dataclass
class Args:
    """Train PPO on a MirageWorld id's explore task and compare it with scripted agents."""

    env: str = "MirageWorld-v0"
    """the gymnasium id to train on"""
    model: str = "tiny"
    """the world model: 'tiny' (shipped weights) or a local model directory"""
    seed: int = 0
    """seed of the policy, of SB3 and of the first resets (world i gets seed + i)"""
    total_timesteps: int = 200_000
    """environment steps in all (a resumed run trains until this count)"""
    num_envs: int = 8
    """worlds in the batched vector env"""
    num_steps: int = 128
    """steps per world per rollout (PPO's n_steps)"""
    episode_steps: int = 256
    """steps per episode, in training and in the final comparison"""
    learning_rate: float = 2.5e-4
    """Adam learning rate"""
    batch_size: int = 256
    """minibatch size"""
    update_epochs: int = 4
    """epochs over each rollout (PPO's n_epochs)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of generalised advantage estimation"""
    clip_coef: float = 0.1
    """PPO's clipping range"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    normalize_reward: bool = True
    """scale rewards by a running estimate of the return's spread (SB3 ``VecNormalize``): a step
    can reveal hundreds of voxels, and unscaled returns swamp the shared CNN with value-loss gradients"""
    checkpoint_every: int = 20_000
    """save a checkpoint every this many environment steps"""
    time_limit_minutes: float | None = None
    """stop training after this many minutes (then save, compare and report as usual)"""
    resume: str | None = None
    """a saved model (.zip) to continue training from (it keeps its own PPO hyperparameters)"""
    eval_episodes: int = 5
    """episodes per policy in the final comparison"""
    eval_seed: int = 10_000
    """first reset seed of the comparison episodes"""
    eval_deterministic: bool = False
    """let the trained policy take its most likely action instead of sampling"""
    device: str = "cpu"
    """torch device of the policy"""
    out: str = "runs/ppo"
    """output folder: args, checkpoints, logs, model.zip, eval.json"""
    smoke: bool = False
    """tiny sizes to check the plumbing (256 steps on 2 worlds, 32-step episodes) for sizes left at their defaults"""


SMOKE = dict(total_timesteps=256, num_envs=2, num_steps=64, batch_size=64, update_epochs=1, episode_steps=32, checkpoint_every=128, eval_episodes=1)


class PolicyAgent:
    """A trained SB3 model behind the scripted agents' ``reset`` / ``act`` interface."""

    def __init__(self, model: PPO, deterministic: bool = False):
        self.model = model
        self.deterministic = deterministic

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            set_random_seed(seed)  # the policy samples from torch's global generator

    def act(self, obs, info: dict):
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return int(action) if isinstance(self.model.action_space, spaces.Discrete) else action


class TimeLimit(BaseCallback):
    """Stops ``learn()`` once ``minutes`` of wall time have passed (a CPU budget)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.deadline = time.perf_counter() + 60.0 * minutes

    def _on_step(self) -> bool:
        return time.perf_counter() < self.deadline


def make_logger(folder: Path):
    formats = ["stdout", "csv"] + (["tensorboard"] if importlib.util.find_spec("tensorboard") else [])
    return configure(str(folder), formats)


def compare(model: PPO, args: Args, env_kwargs: dict) -> dict:
    """Mean coverage voxels per episode of the trained policy, RandomAgent and FrontierAgent
    on the same seeds, ``args.episode_steps`` steps each."""
    env = make_env(args.env, env_kwargs, args.episode_steps)()
    contenders = {
        "ppo": PolicyAgent(model, deterministic=args.eval_deterministic),
        "random": RandomAgent(env.action_space),
        "frontier": FrontierAgent(env.action_space),
    }
    sources = [Source(f"seed {s}", s) for s in range(args.eval_seed, args.eval_seed + args.eval_episodes)]
    results = {}
    for name, agent in contenders.items():
        episodes = [run_explore_episode(env, agent, source, args.episode_steps) for source in sources]
        results[name] = {key: stats([e[key] for e in episodes]) for key in ("coverage_voxels", "reward", "collisions", "steps_per_second")}
    env.close()
    return {"episode_steps": args.episode_steps, "seeds": [s.seed for s in sources], "policies": results}


def train(args: Args, env_kwargs: dict | None = None) -> dict:
    """Train, checkpoint, save ``model.zip`` and write ``eval.json``; returns a summary.

    ``env_kwargs`` go to every env (e.g. ``{"model": backend_object}``); they override
    ``args.model``.
    """
    if args.smoke:
        defaults = Args()
        args = replace(args, **{k: v for k, v in SMOKE.items() if getattr(args, k) == getattr(defaults, k)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"model": args.model, **(env_kwargs or {})}
    (out / "args.json").write_text(json.dumps({**asdict(args), "model": model_name(env_kwargs["model"])}, indent=2))
    set_random_seed(args.seed)

    venv = make_sb3_vec_env(args.env, num_envs=args.num_envs, seed=args.seed, max_episode_steps=args.episode_steps, **env_kwargs)
    if args.normalize_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=args.gamma)
    if args.resume:
        model = PPO.load(args.resume, env=venv, device=args.device)
        print(f"resumed from {args.resume} at {model.num_timesteps} steps")
    else:
        policy = "MultiInputPolicy" if isinstance(venv.observation_space, spaces.Dict) else "CnnPolicy"
        model = PPO(
            policy,
            venv,
            learning_rate=args.learning_rate,
            n_steps=args.num_steps,
            batch_size=args.batch_size,
            n_epochs=args.update_epochs,
            gamma=args.gamma,
            gae_lambda=args.gae_lambda,
            clip_range=args.clip_coef,
            ent_coef=args.ent_coef,
            seed=args.seed,
            device=args.device,
            verbose=1,
        )
    model.set_logger(make_logger(out / "logs" / f"from_step_{model.num_timesteps}"))
    callbacks = [CheckpointCallback(save_freq=max(args.checkpoint_every // args.num_envs, 1), save_path=str(out / "checkpoints"), name_prefix="ppo")]
    if args.time_limit_minutes is not None:
        callbacks.append(TimeLimit(args.time_limit_minutes))

    before = model.num_timesteps
    start = time.perf_counter()
    remaining = args.total_timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=callbacks, reset_num_timesteps=not args.resume)
    seconds = time.perf_counter() - start
    steps_per_second = (model.num_timesteps - before) / max(seconds, 1e-9)
    print(f"trained to {model.num_timesteps} steps, {steps_per_second:.1f} steps/s")
    model.save(out / "model")
    model.logger.close()  # flushes and closes progress.csv
    venv.close()

    evaluation = compare(model, args, env_kwargs)
    evaluation.update(timesteps=model.num_timesteps, train_steps_per_second=steps_per_second)
    (out / "eval.json").write_text(json.dumps(evaluation, indent=2, allow_nan=False))
    for name, result in evaluation["policies"].items():
        c = result["coverage_voxels"]
        print(f"{name:>8}: {c['mean']:.0f} ± {c['std']:.0f} coverage voxels per {args.episode_steps}-step episode")
    return {"model": str(out / "model.zip"), "eval": evaluation, "timesteps": model.num_timesteps}


def main(argv: list[str] | None = None) -> int:
    train(parse_args(Args, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
