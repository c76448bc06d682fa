"""PPO through Ray RLlib on MirageWorld: R env runners, each stepping a batched vector env of N worlds.

    python -m agents.rllib_ppo --quick                                   # 1 iteration, 1 remote runner x 2 worlds
    python -m agents.rllib_ppo --num-env-runners 2 --num-envs-per-env-runner 8 --time-limit-minutes 60 --out runs/rllib-ppo
    python -m agents.rllib_ppo --address 10.0.0.1:6379 --num-env-runners 64 ...   # join an existing Ray cluster
    python -m agents.rllib_ppo --resume runs/rllib-ppo/checkpoints/iter_40 --iterations 80 --out runs/rllib-ppo

The env glue (creator, seeds, uint8 frames, the id inside remote runners) is
:mod:`mirage_gym.rllib`. Without ``--address`` a local Ray starts on loopback with
``--num-cpus`` CPUs (default: one per runner plus one). The output folder gets
``args.json``, ``checkpoints/iter_N`` (RLlib's own checkpoints, every
``--checkpoint-every`` iterations and at the end) and ``results.json``: per-iteration
progress and the final comparison, on held-out seeds, of the trained policy with
``RandomAgent`` (coverage voxels per episode, the evaluation of :mod:`agents.evaluate`).
The last line printed is one JSON object with the run's summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

import mirage_gym.rllib as mrl

from . import parse_args
from .evaluate import Source, make_env, run_explore_episode, stats
from .policies import RandomAgent


@dataclass
class Args:
    """Train PPO with Ray RLlib on a MirageWorld id's explore task and compare it with a random agent."""

    env: str = "MirageWorld-v0"
    """the gymnasium id to train on (registered with Ray Tune under the same name)"""
    model: str = "tiny"
    """the world model: 'tiny' (shipped weights) or a local model directory"""
    seed: int = 0
    """RLlib's seed: runner w resets with seed + w, its worlds with distinct seeds derived from that"""
    num_env_runners: int = 2
    """remote env runners (0: sample in the driver)"""
    num_envs_per_env_runner: int = 8
    """worlds in each runner's batched vector env"""
    rollout_fragment_length: int = 32
    """steps per world per runner per sample call"""
    iterations: int = 1000
    """training iterations (a resumed run trains until this count)"""
    time_limit_minutes: float | None = None
    """stop after this many minutes of training (then checkpoint, compare and report as usual)"""
    episode_steps: int = 256
    """steps per episode, in training and in the comparison"""
    reward_per_voxel: float = 0.01
    """the env's reward per newly seen voxel (smaller than the env's 0.05 keeps returns in the value head's range)"""
    learning_rate: float = 2.5e-4
    """Adam learning rate"""
    minibatch_size: int = 128
    """PPO minibatch size"""
    num_epochs: int = 4
    """epochs over each train batch"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """lambda of generalised advantage estimation"""
    clip_coef: float = 0.1
    """PPO's clipping range"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_clip: float = 100.0
    """clip of the value loss"""
    address: str | None = None
    """address of an existing Ray cluster to join (default: start a local one)"""
    num_cpus: int | None = None
    """CPUs of the local Ray (default: num_env_runners + 1); ignored with --address"""
    checkpoint_every: int = 10
    """save an RLlib checkpoint every this many iterations"""
    resume: str | None = None
    """an RLlib checkpoint folder to continue from"""
    eval_episodes: int = 5
    """held-out episodes per policy in the final comparison"""
    eval_seed: int = 10_000
    """first reset seed of the comparison episodes"""
    out: str = "runs/rllib-ppo"
    """output folder: args, checkpoints, results.json"""
    quick: bool = False
    """one iteration on 1 remote runner x 2 worlds, tiny batches and 32-step episodes (checks the plumbing)"""


QUICK = dict(
    iterations=1, num_env_runners=1, num_envs_per_env_runner=2, rollout_fragment_length=16, minibatch_size=16,
    num_epochs=1, episode_steps=32, eval_episodes=1, checkpoint_every=1,
)


class ModuleAgent:
    """A trained RLlib module behind the scripted agents' ``reset`` / ``act`` interface:
    frames cast as :class:`mirage_gym.rllib.FramesToFloat` casts them, actions sampled."""

    def __init__(self, module):
        self.module = module
        self.generator = torch.Generator().manual_seed(0)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.generator.manual_seed(seed)

    def act(self, obs, info: dict) -> int:
        frames = torch.from_numpy(np.asarray(mrl.FramesToFloat().preprocess(obs, None))[None])
        with torch.no_grad():
            logits = self.module.forward_inference({"obs": frames})["action_dist_inputs"][0]
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator))


def build(args: Args):
    from ray.rllib.algorithms.ppo import PPOConfig

    name = mrl.register(args.env, model=args.model, max_episode_steps=args.episode_steps, reward_per_voxel=args.reward_per_voxel)
    config = mrl.configure(PPOConfig(), name, args.num_env_runners, args.num_envs_per_env_runner)
    batch = max(args.num_env_runners, 1) * args.num_envs_per_env_runner * args.rollout_fragment_length
    return (
        config.env_runners(rollout_fragment_length=args.rollout_fragment_length, num_cpus_per_env_runner=1)
        .training(
            lr=args.learning_rate, gamma=args.gamma, lambda_=args.gae_lambda, clip_param=args.clip_coef,
            entropy_coeff=args.ent_coef, vf_clip_param=args.vf_clip, train_batch_size_per_learner=batch,
            minibatch_size=min(args.minibatch_size, batch), num_epochs=args.num_epochs,
        )
        .debugging(seed=args.seed)
    )


def progress(result: dict) -> dict:
    runners = result.get("env_runners", {})
    mean_return = runners.get("episode_return_mean")
    return {
        "iteration": int(result["training_iteration"]),
        "env_steps_sampled": int(runners.get("num_env_steps_sampled_lifetime", 0)),
        "episode_return_mean": None if mean_return is None or not np.isfinite(mean_return) else float(mean_return),
        "iteration_seconds": float(result.get("time_this_iter_s", float("nan"))),
    }


def compare(module, args: Args) -> dict:
    """Mean coverage voxels per held-out episode of the trained policy and RandomAgent."""
    env = make_env(args.env, {"model": args.model}, args.episode_steps)()
    sources = [Source(f"seed {s}", s) for s in range(args.eval_seed, args.eval_seed + args.eval_episodes)]
    results = {}
    for name, agent in {"rllib_ppo": ModuleAgent(module), "random": RandomAgent(env.action_space)}.items():
        episodes = [run_explore_episode(env, agent, source, args.episode_steps) for source in sources]
        results[name] = {key: stats([e[key] for e in episodes]) for key in ("coverage_voxels", "reward", "collisions")}
    env.close()
    return {"episode_steps": args.episode_steps, "seeds": [s.seed for s in sources], "policies": results}


def train(args: Args) -> dict:
    import ray
    from ray.rllib.algorithms.algorithm import Algorithm

    if args.quick:
        defaults = Args()
        args = replace(args, **{k: v for k, v in QUICK.items() if getattr(args, k) == getattr(defaults, k)})
    out = Path(args.out).resolve()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(asdict(args), indent=2))
    if args.address:
        ray.init(address=args.address)
    else:
        mrl.start_local_ray(args.num_cpus or args.num_env_runners + 1)
    try:
        config = build(args)
        algo = Algorithm.from_checkpoint(args.resume) if args.resume else config.build_algo()
        runners = algo.env_runner_group.foreach_env_runner(
            lambda r: {"worker_index": r.worker_index, "node": ray.get_runtime_context().get_node_id()}, local_env_runner=False
        )
        history, start = [], time.perf_counter()
        deadline = None if args.time_limit_minutes is None else start + 60.0 * args.time_limit_minutes
        while algo.iteration < args.iterations and (deadline is None or time.perf_counter() < deadline):
            row = progress(algo.train())
            history.append(row)
            ret = "n/a" if row["episode_return_mean"] is None else f"{row['episode_return_mean']:.2f}"
            print(f"iter {row['iteration']:4d}  env steps {row['env_steps_sampled']:8d}  return {ret:>8}  {row['iteration_seconds']:.1f} s", flush=True)
            if row["iteration"] % args.checkpoint_every == 0:
                algo.save_to_path(str(out / "checkpoints" / f"iter_{row['iteration']}"))
        seconds = time.perf_counter() - start
        checkpoint = algo.save_to_path(str(out / "checkpoints" / f"iter_{algo.iteration}"))
        evaluation = compare(algo.get_module(), args) if args.eval_episodes > 0 else None
        algo.stop()
    finally:
        ray.shutdown()
    steps = history[-1]["env_steps_sampled"] if history else 0
    summary = {
        "env_steps_sampled": steps,
        "num_env_runners": args.num_env_runners,
        "num_envs_per_env_runner": args.num_envs_per_env_runner,
        "iterations": len(history),
        "train_seconds": seconds,
        "env_steps_per_second": steps / max(seconds, 1e-9) if not args.resume else None,
        "runners": runners,
        "checkpoint": str(checkpoint),
    }
    (out / "results.json").write_text(json.dumps({**summary, "args": asdict(args), "history": history, "eval": evaluation}, indent=2))
    if evaluation:
        for name, result in evaluation["policies"].items():
            c = result["coverage_voxels"]
            print(f"{name:>10}: {c['mean']:.0f} ± {c['std']:.0f} coverage voxels per {args.episode_steps}-step episode")
        summary["coverage_voxels"] = {name: r["coverage_voxels"]["mean"] for name, r in evaluation["policies"].items()}
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    train(parse_args(Args, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
