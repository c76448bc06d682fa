"""Env steps/s sampled by Ray RLlib (1 and 2 env runners x N worlds) beside the batched vector env stepped directly.

    python benchmarks/rllib.py [--quick] [--worlds 8] [--rounds 5] [--json PATH]

One run, one local Ray (loopback, ``--num-cpus``). Three PPO algorithms are built through
:mod:`mirage_gym.rllib` (1, 2 and 1 remote runners: one per side below); then, round by round, the
same number of steps per world is taken by each side in turn, so drifts in machine speed
hit every side alike:

- ``direct``: ``MirageWorldVectorEnv`` of N worlds in this process, uniform random actions;
- ``rllib, R runner(s), random actions``: ``EnvRunner.sample`` on all remote runners at
  once (uniform random actions): the env plus RLlib's runner machinery (episodes,
  connectors, the frame cast, object transfer back to the driver);
- ``rllib, 1 runner, policy``: the same with the (untrained) CNN policy choosing actions,
  as in training.

Aggregate steps/s = all worlds' steps / wall time of the round. RLlib's overhead is
``1 - rllib_1_runner / direct``. Only sampling is timed, not the learner's update.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import mirage_gym.rllib as mrl


def direct_round(env, steps: int, rng: np.random.Generator) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, 9, size=env.num_envs))
    return time.perf_counter() - start


def rllib_round(algo, steps_per_world: int, worlds: int, random_actions: bool) -> tuple[float, int]:
    start = time.perf_counter()
    counts = algo.env_runner_group.foreach_env_runner(
        lambda r: sum(len(e) for e in r.sample(num_timesteps=steps_per_world * worlds, random_actions=random_actions)),
        local_env_runner=False,
    )
    return time.perf_counter() - start, int(sum(counts))


def build_algo(name: str, runners: int, worlds: int, fragment: int):
    from ray.rllib.algorithms.ppo import PPOConfig

    config = mrl.configure(PPOConfig(), name, num_env_runners=runners, num_envs_per_env_runner=worlds)
    config = config.env_runners(rollout_fragment_length=fragment, num_cpus_per_env_runner=1).debugging(seed=0)
    batch = runners * worlds * fragment
    return config.training(train_batch_size_per_learner=batch, minibatch_size=min(32, batch)).build_algo()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, default=8, help="worlds per env runner (and in the direct vector env)")
    parser.add_argument("--steps", type=int, default=32, help="steps per world per side per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (the first one is a warm-up, not counted)")
    parser.add_argument("--num-cpus", type=int, default=4, help="CPUs of the local Ray (4 runners in all)")
    parser.add_argument("--quick", action="store_true", help="2 worlds, 8 steps, 2 rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.worlds, args.steps, args.rounds = 2, 8, 2
    import os

    import ray

    mrl.start_local_ray(args.num_cpus)
    try:
        name = mrl.register("MirageWorld-v0", max_episode_steps=10_000)
        # one algorithm per side: a runner's ongoing episodes cannot switch between random and policy actions
        algos = {side: build_algo(name, runners, args.worlds, args.steps) for side, runners in (("random 1", 1), ("random 2", 2), ("policy 1", 1))}
        env = mrl.make_env({"num_envs": args.worlds, "max_episode_steps": 10_000})
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        sides = {
            "direct vector env": lambda: (direct_round(env, args.steps, rng), args.steps * args.worlds),
            "rllib, 1 runner, random actions": lambda: rllib_round(algos["random 1"], args.steps, args.worlds, True),
            "rllib, 2 runners, random actions": lambda: rllib_round(algos["random 2"], args.steps, args.worlds, True),
            "rllib, 1 runner, policy": lambda: rllib_round(algos["policy 1"], args.steps, args.worlds, False),
        }
        rates: dict[str, list[float]] = {side: [] for side in sides}
        for round_index in range(args.rounds):
            for side, run in sides.items():
                seconds, steps = run()
                if round_index > 0:
                    rates[side].append(steps / seconds)
        env.close()
        for algo in algos.values():
            algo.stop()
    finally:
        ray.shutdown()
    median = {side: float(np.median(r)) for side, r in rates.items()}
    direct = median["direct vector env"]
    results = {
        "worlds_per_runner": args.worlds,
        "steps_per_world_per_round": args.steps,
        "rounds_counted": args.rounds - 1,
        "cpus": os.cpu_count(),
        "steps_per_second": median,
        "per_round": rates,
        "rllib_overhead_1_runner": 1.0 - median["rllib, 1 runner, random actions"] / direct,
        "scaling_2_over_1_runner": median["rllib, 2 runners, random actions"] / median["rllib, 1 runner, random actions"],
    }
    print(f"| side ({args.worlds} worlds per env) | env steps/s (median of {args.rounds - 1} rounds) | vs direct |")
    print("|---|---:|---:|")
    for side, value in median.items():
        print(f"| {side} | {value:.1f} | {value / direct:.2f}x |")
    print(f"RLlib overhead with 1 runner: {100 * results['rllib_overhead_1_runner']:.0f}%; 2 runners / 1 runner: {results['scaling_2_over_1_runner']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
