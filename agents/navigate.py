"""Goal tasks (imagenav, pointnav, homing): the oracle, a random baseline and PPO, success and SPL.

    python -m agents.navigate --episodes 10 --out agents/results/navigation
    python -m agents.navigate --ppo-task pointnav --ppo-minutes 60 --out runs/nav   # train PPO first

Every agent plays the same held-out episodes (reset seeds ``seed .. seed+episodes-1``, which
training never uses: PPO trains on seeds from ``ppo_seed``) of every task id, up to
``steps`` steps each. The report folder gets ``report.json`` (per task and agent: success
rate, SPL, final geodesic distance to the goal, path length, episode length, steps/s, and
every episode) and ``report.md`` (the same as tables). ``--ppo-task`` trains
stable-baselines3 PPO (``MultiInputPolicy`` on the ``Dict`` observation, on the batched
vector env) on that task for ``--ppo-minutes`` and adds it to the report for that task.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

import mirage_gym  # noqa: F401  (registers the ids)
from mirage_gym.tasks import GoalAction

from . import parse_args

TASK_IDS = {"imagenav": "MirageImageNav-v0", "pointnav": "MiragePointNav-v0", "homing": "MirageHoming-v0"}


@dataclass
class Args:
    """Evaluate the oracle, a random agent and (optionally) PPO on the goal tasks."""

    tasks: list[str] = field(default_factory=list)
    """tasks to run (imagenav, pointnav, homing); empty means all"""
    episodes: int = 10
    """held-out episodes per task and agent"""
    seed: int = 1000
    """first reset seed of the held-out episodes"""
    steps: int = 200
    """step limit of an episode"""
    model: str = "tiny"
    """the world model: 'tiny' (shipped weights) or a local model directory"""
    ppo_task: str | None = None
    """train PPO on this task before evaluating (its episodes use seeds from ppo_seed)"""
    ppo_minutes: float = 60.0
    """wall-clock budget of the PPO training"""
    ppo_model: str | None = None
    """evaluate an already trained PPO model (a .zip) on ppo_task instead of training"""
    ppo_seed: int = 0
    """seed of PPO and of its training episodes"""
    num_envs: int = 4
    """worlds in PPO's batched vector env"""
    out: str = "outputs/navigation"
    """report folder"""


class OracleAgent:
    """Habitat's ShortestPathFollower: asks the task for the next action on the shortest path."""

    def __init__(self, env: gym.Env):
        self.env = env

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs, info: dict):
        return int(self.env.unwrapped.adapter.task.oracle_action(0))


class RandomGoalAgent:
    """Uniform over the goal tasks' 10 actions (STOP included), Habitat's random baseline."""

    def __init__(self, env: gym.Env):
        self.rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs, info: dict):
        return int(self.rng.integers(len(GoalAction)))


class PolicyAgent:
    """A trained SB3 policy."""

    def __init__(self, model, deterministic: bool = False):
        self.model = model
        self.deterministic = deterministic

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs, info: dict):
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return int(action)


def run_goal_episode(env: gym.Env, agent, seed: int) -> dict:
    agent.reset(seed)
    obs, info = env.reset(seed=seed)
    steps, start = 0, time.perf_counter()
    while True:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        steps += 1
        if terminated or truncated:
            break
    return {
        "seed": seed,
        "success": bool(info["success"]),
        "spl": float(info["spl"]),
        "distance_to_goal": float(info["distance_to_goal"]),
        "path_length": float(info["path_length"]),
        "shortest_path_length": float(info["shortest_path_length"]),
        "steps": steps,
        "stopped": bool(terminated),
        "steps_per_second": steps / max(time.perf_counter() - start, 1e-9),
    }


def summary(episodes: list[dict]) -> dict:
    def mean_std(key):
        values = np.array([e[key] for e in episodes], dtype=np.float64)
        return {"mean": float(values.mean()), "std": float(values.std())}

    return {
        "success": mean_std("success"),
        "spl": mean_std("spl"),
        "distance_to_goal": mean_std("distance_to_goal"),
        "path_length": mean_std("path_length"),
        "steps": mean_std("steps"),
        "steps_per_second": mean_std("steps_per_second"),
        "episodes": episodes,
    }


def train_ppo(args: Args, env_kwargs: dict, out: Path):
    """PPO (MultiInputPolicy) on the batched vector env of ``args.ppo_task`` for ``args.ppo_minutes``."""
    from stable_baselines3 import PPO

    from mirage_gym.sb3 import make_sb3_vec_env

    from .ppo import TimeLimit

    venv = make_sb3_vec_env(TASK_IDS[args.ppo_task], num_envs=args.num_envs, seed=args.ppo_seed,
                            max_episode_steps=args.steps, **env_kwargs)
    model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=128, n_epochs=4, learning_rate=2.5e-4,
                ent_coef=0.01, seed=args.ppo_seed, device="cpu", verbose=1)
    start = time.perf_counter()
    model.learn(total_timesteps=10**9, callback=TimeLimit(args.ppo_minutes))
    seconds = time.perf_counter() - start
    model.save(out / f"ppo_{args.ppo_task}")
    venv.close()
    return model, {"timesteps": int(model.num_timesteps), "minutes": seconds / 60,
                   "steps_per_second": model.num_timesteps / max(seconds, 1e-9)}


def evaluate(args: Args, env_kwargs: dict | None = None) -> dict:
    tasks = args.tasks or list(TASK_IDS)
    unknown = [t for t in tasks + ([args.ppo_task] if args.ppo_task else []) if t not in TASK_IDS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {list(TASK_IDS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"model": args.model, **(env_kwargs or {})}
    report = {"args": asdict(args), "tasks": {}}
    ppo = None
    if args.ppo_model:
        from stable_baselines3 import PPO

        ppo = PPO.load(args.ppo_model, device="cpu")
    elif args.ppo_task:
        ppo, report["ppo_training"] = train_ppo(args, env_kwargs, out)
    seeds = range(args.seed, args.seed + args.episodes)
    for task in tasks:
        env = gym.make(TASK_IDS[task], max_episode_steps=args.steps, **env_kwargs)
        agents = {"oracle": OracleAgent(env), "random": RandomGoalAgent(env)}
        if ppo is not None and task == args.ppo_task:
            agents["ppo"] = PolicyAgent(ppo)
        report["tasks"][task] = {}
        for name, agent in agents.items():
            result = summary([run_goal_episode(env, agent, s) for s in seeds])
            report["tasks"][task][name] = result
            print(f"{task:>9} {name:>7}: success {result['success']['mean']:.2f}  SPL {result['spl']['mean']:.3f}  "
                  f"distance to goal {result['distance_to_goal']['mean']:.2f} m")
        env.close()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    a = report["args"]
    lines = [
        "# Goal tasks: success and SPL",
        "",
        f"Held-out reset seeds {a['seed']}..{a['seed'] + a['episodes'] - 1} ({a['episodes']} episodes per task and "
        f"agent), at most {a['steps']} steps, model `{a['model']}`.",
        "",
        "| task | agent | success | SPL | final distance to goal (m) | path (m) | steps | steps/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, agents in report["tasks"].items():
        for name, r in agents.items():
            lines.append(f"| {task} | {name} | {r['success']['mean']:.2f} | {r['spl']['mean']:.3f} ± {r['spl']['std']:.3f} | "
                         f"{r['distance_to_goal']['mean']:.2f} | {r['path_length']['mean']:.2f} | "
                         f"{r['steps']['mean']:.1f} | {r['steps_per_second']['mean']:.1f} |")
    if "ppo_training" in report:
        t = report["ppo_training"]
        lines += ["", f"PPO trained on {a['ppo_task']} for {t['minutes']:.1f} minutes: {t['timesteps']} steps "
                      f"({t['steps_per_second']:.1f} steps/s), seeds from {a['ppo_seed']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    evaluate(parse_args(Args, argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
