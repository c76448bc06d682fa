"""Env speed and memory: single-env steps/s, batched vector env, flat per-step cost, RSS growth.

    python benchmarks/env.py [--quick] [--json PATH] [--model tiny]

Measured side by side in one run on this machine. Targets: one env >= 25 steps/s at
64x64; 8 batched worlds >= 3x one env in aggregate; per-step time at step 2000 within
1.15x of step 20 (the end of the run is reported too); resident memory growth over 5000
steps < 50 MB. One episode of random-walk actions (mostly turns and forward moves).
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


def single_env(model: str, steps: int, window: int, seed: int = 0) -> dict:
    env = gym.make("MirageWorld-v0", model=model, max_episode_steps=steps + 1)
    env.reset(seed=seed)
    actions = random_walk(np.random.default_rng(seed), steps)
    times = np.zeros(steps)
    rss = []
    for t, a in enumerate(actions):
        start = time.perf_counter()
        env.step(int(a))
        times[t] = time.perf_counter() - start
        if t % 100 == 0:
            rss.append(rss_mb())
    info = env.step(0)[4]
    early = float(np.median(times[10 : 10 + window]))
    mid = min(2000, steps - window // 2)  # the bar: step 2000 against step 20
    at_2000 = float(np.median(times[mid - window // 2 : mid + window // 2]))
    late = float(np.median(times[-window:]))
    settled = rss[min(len(rss) - 1, 2)]  # after warm-up allocations
    return {
        "steps": steps,
        "steps_per_second": float(1.0 / np.median(times)),
        "ms_per_step_early": 1000 * early,
        "ms_per_step_at_2000": 1000 * at_2000,
        "step_2000_over_early": at_2000 / early,
        "ms_per_step_late": 1000 * late,
        "late_over_early": late / early,
        "rss_growth_mb": rss[-1] - settled,
        "memory_points": info["memory_points"],
        "memory_bytes": info["memory_bytes"],
    }


def vector_env(model: str, num_envs: int, steps: int, seed: int = 0) -> dict:
    vec = gym.make_vec("MirageWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", model=model)
    vec.reset(seed=seed)
    rng = np.random.default_rng(seed)
    vec.step(random_walk(rng, num_envs))
    start = time.perf_counter()
    for _ in range(steps):
        vec.step(random_walk(rng, num_envs))
    seconds = time.perf_counter() - start
    return {"num_envs": num_envs, "aggregate_steps_per_second": num_envs * steps / seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run for CI (fewer steps)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args(argv)
    long_steps = 300 if args.quick else 5000
    single = single_env(args.model, long_steps, window=20 if args.quick else 100)
    vec = vector_env(args.model, 8, 10 if args.quick else 100)
    results = {
        "quick": args.quick,
        "single": single,
        "vector": vec,
        "vector_speedup": vec["aggregate_steps_per_second"] / single["steps_per_second"],
    }
    print(f"{'measure':44s} {'value':>10s}  target")
    rows = [
        ("one env, steps/s (64x64)", single["steps_per_second"], ">= 25"),
        ("8 batched worlds, aggregate steps/s", vec["aggregate_steps_per_second"], ""),
        ("batched speed-up over one env", results["vector_speedup"], ">= 3"),
        ("ms/step at step ~20", single["ms_per_step_early"], ""),
        ("ms/step at step ~2000", single["ms_per_step_at_2000"], ""),
        ("step 2000 / step 20 per-step time", single["step_2000_over_early"], "<= 1.15"),
        (f"ms/step at step ~{long_steps}", single["ms_per_step_late"], ""),
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
