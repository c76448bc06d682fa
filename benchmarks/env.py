"""Env speed and memory: single-env steps/s, batched vector env, flat per-step cost, RSS growth.

    python benchmarks/env.py [--quick] [--json PATH] [--model tiny]

Measured side by side in one run on this machine: every ratio times its two sides
alternately, step by step, so drifts in machine speed cancel. Targets: one env >= 25
steps/s at 64x64; 8 batched worlds >= 3x one env in aggregate; per-step time at step 2000
within 1.15x of a fresh env's step ~20 (the end of the run is reported too); resident
memory growth over 5000 steps < 50 MB. Random-walk actions (mostly turns and forward moves),
except where said: one env under uniform random actions (look up/down included) is timed
beside one under the random walk (target >= 30 steps/s), and two envs are timed three ways
side by side: an ``AsyncVectorEnv`` of 2 workers, a ``SyncVectorEnv`` and the batched env.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import gymnasium as gym
import numpy as np

import mirage_gym  # noqa: F401


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def random_walk(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly turns and forward moves, like an exploring agent."""
    return rng.choice(9, size=n, p=[0.3, 0.05, 0.075, 0.075, 0.2, 0.2, 0.05, 0.05, 0.0])


def timed_step(env, action) -> float:
    start = time.perf_counter()
    env.step(action)
    return time.perf_counter() - start


def fresh_env(model: str, seed: int, warmup: int = 10):
    """A new single env, ``warmup`` steps in: the "step 20" reference."""
    env = gym.make("MirageWorld-v0", model=model)
    env.reset(seed=seed)
    for a in random_walk(np.random.default_rng(seed + 1), warmup):
        env.step(int(a))
    return env


def single_env(model: str, steps: int, window: int, seed: int = 0) -> dict:
    """One long episode. At step ~2000 and at the end, ``window`` of its steps are timed
    alternately with steps of a fresh env (at steps 10 to 10 + window): the ratio compares
    step N with step ~20 at the same moment, so a machine that speeds up or slows down
    over minutes (shared hosts do) does not enter it."""
    env = gym.make("MirageWorld-v0", model=model, max_episode_steps=steps + 2 * window + 1)
    env.reset(seed=seed)
    actions = random_walk(np.random.default_rng(seed), steps)
    times = np.zeros(steps)
    rss = []
    checkpoints = sorted({min(2000, steps - window), steps - window})
    paired = {}
    for t, a in enumerate(actions):
        if t in checkpoints:
            probe = fresh_env(model, seed + 1)
            probe_actions = random_walk(np.random.default_rng(seed + 2), window)
            pairs = [(timed_step(env, int(b)), timed_step(probe, int(c)))
                     for b, c in zip(actions[t : t + window], probe_actions)]
            probe.close()
            paired[t] = np.median(np.array(pairs), axis=0)
        if any(c <= t < c + window for c in checkpoints):
            continue  # stepped above
        times[t] = timed_step(env, int(a))
        if t % 100 == 0:
            rss.append(rss_mb())
    info = env.step(0)[4]
    at_2000, late = paired[checkpoints[0]], paired[checkpoints[-1]]
    settled = rss[min(len(rss) - 1, 2)]  # after warm-up allocations
    return {
        "steps": steps,
        "mid_step": checkpoints[0],
        "steps_per_second": float(1.0 / np.median(times[times > 0])),
        "ms_per_step_at_2000": 1000 * float(at_2000[0]),
        "ms_per_step_fresh_beside_2000": 1000 * float(at_2000[1]),
        "step_2000_over_early": float(at_2000[0] / at_2000[1]),
        "ms_per_step_late": 1000 * float(late[0]),
        "ms_per_step_fresh_beside_late": 1000 * float(late[1]),
        "late_over_early": float(late[0] / late[1]),
        "rss_growth_mb": rss[-1] - settled,
        "memory_points": info["memory_points"],
        "memory_bytes": info["memory_bytes"],
    }


def vector_env(model: str, num_envs: int, steps: int, seed: int = 0) -> dict:
    """The batched env and one env stepped alternately, so both see the same machine."""
    vec = gym.make_vec("MirageWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", model=model)
    vec.reset(seed=seed)
    one = fresh_env(model, seed)
    rng = np.random.default_rng(seed)
    vec.step(random_walk(rng, num_envs))
    pairs = np.array([(timed_step(vec, random_walk(rng, num_envs)), timed_step(one, int(random_walk(rng, 1)[0])))
                      for _ in range(steps)])
    vec_time, one_time = np.median(pairs, axis=0)
    return {
        "num_envs": num_envs,
        "aggregate_steps_per_second": num_envs / vec_time,
        "one_env_steps_per_second_beside": 1.0 / one_time,
        "speedup": num_envs * one_time / vec_time,
    }


def uniform_random(rng: np.random.Generator, n: int) -> np.ndarray:
    """Every action equally likely (look up/down included), as ``action_space.sample()`` gives."""
    return rng.integers(0, 9, size=n)


def action_mixes(model: str, steps: int, seed: int = 0) -> dict:
    """One env under uniform random actions and one under the random walk, stepped alternately."""
    envs = {name: fresh_env(model, seed) for name in ("uniform_random", "random_walk")}
    mixes = {"uniform_random": uniform_random, "random_walk": random_walk}
    rng = np.random.default_rng(seed)
    times = {name: [] for name in envs}
    for t in range(steps):
        order = list(envs) if t % 2 == 0 else list(envs)[::-1]
        for name in order:
            times[name].append(timed_step(envs[name], int(mixes[name](rng, 1)[0])))
    return {f"{name}_steps_per_second": 1.0 / float(np.median(ts)) for name, ts in times.items()}


def two_env_setups(model: str, steps: int, seed: int = 0) -> dict:
    """Two envs three ways, stepped in turn: ``AsyncVectorEnv`` (2 worker processes, one
    torch thread each by default), ``SyncVectorEnv`` (both in this process) and the batched
    vector env (one generator forward for both)."""
    def make():
        return gym.make("MirageWorld-v0", model=model)

    setups = {
        "async_2_workers": gym.vector.AsyncVectorEnv([make, make], context="fork"),
        "sync_2_envs": gym.vector.SyncVectorEnv([make, make]),
        "batched_2_worlds": gym.make_vec("MirageWorld-v0", num_envs=2, vectorization_mode="vector_entry_point", model=model),
    }
    rng = np.random.default_rng(seed)
    times = {name: [] for name in setups}
    try:
        for name, vec in setups.items():
            vec.reset(seed=seed)
            vec.step(uniform_random(rng, 2))
        for t in range(steps):
            names = list(setups)
            for name in names[t % 3:] + names[:t % 3]:
                times[name].append(timed_step(setups[name], uniform_random(rng, 2)))
    finally:
        for vec in setups.values():
            vec.close()
    return {f"{name}_aggregate_steps_per_second": 2.0 / float(np.median(ts)) for name, ts in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run for CI (fewer steps)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args(argv)
    long_steps = 300 if args.quick else 5000
    single = single_env(args.model, long_steps, window=20 if args.quick else 100)
    vec = vector_env(args.model, 8, 10 if args.quick else 100)
    mixes = action_mixes(args.model, 10 if args.quick else 300)
    setups = two_env_setups(args.model, 10 if args.quick else 150)
    results = {
        "quick": args.quick,
        "single": single,
        "vector": vec,
        "vector_speedup": vec["speedup"],
        "action_mixes": mixes,
        "two_envs": setups,
    }
    print(f"{'measure':44s} {'value':>10s}  target")
    mid = single["mid_step"]
    rows = [
        ("one env, steps/s (64x64)", single["steps_per_second"], ">= 25"),
        ("one env, uniform random actions, steps/s", mixes["uniform_random_steps_per_second"], ">= 30"),
        ("one env beside it, random walk, steps/s", mixes["random_walk_steps_per_second"], ""),
        ("2 envs: AsyncVectorEnv, aggregate steps/s", setups["async_2_workers_aggregate_steps_per_second"], ""),
        ("2 envs: SyncVectorEnv, aggregate steps/s", setups["sync_2_envs_aggregate_steps_per_second"], ""),
        ("2 envs: batched, aggregate steps/s", setups["batched_2_worlds_aggregate_steps_per_second"], ""),
        ("8 batched worlds, aggregate steps/s", vec["aggregate_steps_per_second"], ""),
        ("one env stepped beside them, steps/s", vec["one_env_steps_per_second_beside"], ""),
        ("batched speed-up over one env", results["vector_speedup"], ">= 3"),
        (f"ms/step at step ~{mid}", single["ms_per_step_at_2000"], ""),
        ("ms/step of a fresh env (step ~20) beside it", single["ms_per_step_fresh_beside_2000"], ""),
        (f"step {mid} / step 20 per-step time", single["step_2000_over_early"], "<= 1.15"),
        (f"ms/step at step ~{long_steps}", single["ms_per_step_late"], ""),
        ("ms/step of a fresh env (step ~20) beside it", single["ms_per_step_fresh_beside_late"], ""),
        (f"step {long_steps} / step 20 per-step time", single["late_over_early"], ""),
        (f"RSS growth over {long_steps} steps (MB)", single["rss_growth_mb"], "< 50"),
        ("memory points at the end", single["memory_points"], ""),
    ]
    for name, value, target in rows:
        print(f"{name:44s} {value:10.2f}  {target}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
