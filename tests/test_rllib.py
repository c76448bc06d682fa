"""Ray RLlib glue (mirage_gym.rllib) and agents.rllib_ppo: creator, seeds, frames, remote runners.

The Ray tests start Ray on loopback with bounded CPUs and shut it down after; one of them
builds a 2-node local cluster (``ray.cluster_utils.Cluster``).
"""

import json
import os

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

pytest.importorskip("ray.rllib", reason="needs the rllib extra: pip install -e '.[rllib]'")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402

import mirage_gym.rllib as mrl  # noqa: E402
from mirage_gym.vector_env import MirageWorldVectorEnv  # noqa: E402


def test_creator_returns_the_batched_vector_env_when_rllib_asks_for_num_envs():
    env = mrl.make_env({"num_envs": 3, "max_episode_steps": 4})
    assert isinstance(env, VectorEnv) and env.num_envs == 3
    assert isinstance(env.unwrapped, MirageWorldVectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    for _ in range(5):  # over the 4-step limit: truncation, then the next-step autoreset
        obs, rewards, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.shape == (3, 64, 64, 3) and not truncated.any() and np.all(rewards == 0.0)
    env.close()
    single = mrl.make_env({"max_episode_steps": 4})  # RLlib's "sync" mode: one env per call
    assert isinstance(single, gym.Env) and not isinstance(single, VectorEnv)
    single.close()


def test_world_seeds_are_reproducible_and_distinct_across_runners():
    # RLlib resets runner w with seed + w; the vector env's own rule (world i gets seed + i)
    # would give runner 1's world 1 the seed of runner 2's world 0
    seeds = [mrl.world_seeds(7 + w, 8) for w in range(4)]
    assert len({s for runner in seeds for s in runner}) == 32
    assert seeds == [mrl.world_seeds(7 + w, 8) for w in range(4)]
    env = mrl.make_env({"num_envs": 2})
    a, _ = env.reset(seed=5)
    assert env.last_seeds == mrl.world_seeds(5, 2)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(c[0], a[1])
    env.close()


def test_frames_to_float_casts_uint8_frames_for_the_cnn_encoder():
    piece = mrl.FramesToFloat()
    box = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    out = piece.recompute_output_observation_space(box, spaces.Discrete(9))
    assert out.dtype == np.float32 and out.shape == (64, 64, 3) and out.high.max() == 1.0
    frame = np.full((64, 64, 3), 255, np.uint8)
    cast = piece.preprocess(frame, None)
    assert cast.dtype == np.float32 and cast.max() == 1.0
    dict_space = spaces.Dict({"rgb": box, "depth": spaces.Box(0, 20, (64, 64, 1), np.float32)})
    out = piece.recompute_output_observation_space(dict_space, spaces.Discrete(9))
    assert out["rgb"].dtype == np.float32 and out["depth"] == dict_space["depth"]
    depth = np.ones((64, 64, 1), np.float32)
    cast = piece.preprocess({"rgb": frame, "depth": depth}, None)
    assert cast["rgb"].max() == 1.0 and cast["depth"] is depth


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mrl.make_env({"num_envs": 0}), "num_envs must be a positive int"),
        (lambda: mrl.make_env([("num_envs", 2)]), "config must be a dict"),
        (lambda: mrl.world_seeds(-1, 2), "seed must be a non-negative int"),
        (lambda: mrl.register("MyWorld"), "env_id must be a registered gymnasium id"),
        (lambda: mrl.register(""), "name must be a non-empty string"),
        (lambda: mrl.configure(PPOConfig(), "NotRegistered-v0"), "name must be registered with mirage_gym.rllib.register"),
        (lambda: mrl.start_local_ray(0), "num_cpus must be a positive int"),
    ],
)
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_configure_rejects_bad_runner_counts():
    mrl.register("MirageWorld-v0")
    with pytest.raises(ValueError, match="num_envs_per_env_runner must be an int >= 1"):
        mrl.configure(PPOConfig(), "MirageWorld-v0", num_envs_per_env_runner=0)
    with pytest.raises(ValueError, match="num_env_runners must be an int >= 0"):
        mrl.configure(PPOConfig(), "MirageWorld-v0", num_env_runners=-1)


@pytest.mark.slow
def test_quick_run_trains_on_uint8_frames_from_a_remote_runner(tmp_path, capsys):
    from agents.rllib_ppo import Args, train

    summary = train(Args(quick=True, out=str(tmp_path / "run")))
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["env_steps_sampled"] == summary["env_steps_sampled"] == 32  # 1 runner x 2 worlds x 16 steps
    assert last["num_env_runners"] == 1 and [r["worker_index"] for r in last["runners"]] == [1]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["history"][0]["iteration"] == 1
    assert set(results["eval"]["policies"]) == {"rllib_ppo", "random"}
    assert (tmp_path / "run" / "checkpoints" / "iter_1" / "algorithm_state.pkl").exists()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_two_node_cluster_samples_from_runners_on_both_nodes(monkeypatch):
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # ray.init(address="127.0.0.1:...") would swap the loopback address for this host's
    # outward IP, where the loopback-bound GCS does not listen: stay on loopback
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    try:
        ray.init(address=cluster.address)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
        # the plain gymnasium id: remote runners never import mirage_gym, the Tune registry carries it
        name = mrl.register("MirageWorld-v0", max_episode_steps=16)
        config = (
            mrl.configure(PPOConfig(), name, num_env_runners=2, num_envs_per_env_runner=2)
            .env_runners(rollout_fragment_length=8, num_cpus_per_env_runner=1)
            .training(train_batch_size_per_learner=32, minibatch_size=16, num_epochs=1)
            .debugging(seed=3)
        )
        algo = config.build_algo()

        def probe(runner):
            episodes = runner.sample(num_timesteps=8, random_actions=True)
            first = [e.get_observations(0) for e in episodes if e.t_started == 0]
            return {
                "worker": runner.worker_index,
                "node": ray.get_runtime_context().get_node_id(),
                "steps": sum(len(e) for e in episodes),
                "seeds": runner.env.env.last_seeds,
                "first_obs_sum": [float(np.asarray(o).sum()) for o in first],
            }

        found = sorted(algo.env_runner_group.foreach_env_runner(probe, local_env_runner=False), key=lambda r: r["worker"])
        assert [r["worker"] for r in found] == [1, 2]
        assert len({r["node"] for r in found}) == 2  # one runner per 1-CPU node
        assert all(r["steps"] >= 8 for r in found)
        # RLlib resets runner w with seed 3 + w; its worlds get distinct, reproducible seeds
        assert [r["seeds"] for r in found] == [mrl.world_seeds(3 + w, 2) for w in (1, 2)]
        assert len({s for r in found for s in r["seeds"]}) == 4
        local = mrl.make_env({"num_envs": 2, "max_episode_steps": 16})
        for r in found:  # the runner's first frames are those of the same seeds reset here
            obs, _ = local.reset(seed=3 + r["worker"])
            expected = [float(o.astype(np.float32).sum() / 255.0) for o in obs]  # FramesToFloat's scale
            np.testing.assert_allclose(sorted(r["first_obs_sum"]), sorted(expected), rtol=1e-5)
        local.close()
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 32
        algo.stop()
    finally:
        ray.shutdown()
        cluster.shutdown()
