"""The native batched vector env and its stable-baselines3 adapter."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import mirage_gym  # noqa: F401
from mirage_gym.vector_env import MirageWorldVectorEnv
from stand_in import PoolingBackend


def make_vec(num_envs=3, **kwargs):
    kwargs.setdefault("model", PoolingBackend())
    return gym.make_vec("MirageWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def test_make_vec_uses_the_native_batched_env():
    vec = make_vec()
    assert isinstance(vec.unwrapped, MirageWorldVectorEnv)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert vec.observation_space.shape == (3, 64, 64, 3)
    assert vec.single_action_space.n == 9


def test_batched_matches_single_envs_under_the_same_seeds():
    vec = make_vec(3)
    singles = [gym.make("MirageWorld-v0", model=PoolingBackend()) for _ in range(3)]
    obs, _ = vec.reset(seed=5)
    for i, env in enumerate(singles):
        single_obs, _ = env.reset(seed=5 + i)
        np.testing.assert_array_equal(obs[i], single_obs)
    rng = np.random.default_rng(0)
    for _ in range(6):
        actions = rng.integers(0, 9, 3)
        obs, rewards, term, trunc, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, te, tr, info = env.step(int(actions[i]))
            np.testing.assert_allclose(obs[i].astype(int), o.astype(int), atol=1)
            assert rewards[i] == pytest.approx(r)
            np.testing.assert_allclose(infos["pose"][i], info["pose"])


def test_next_step_autoreset_and_per_env_step_counts():
    vec = make_vec(2, max_episode_steps=3)
    vec.reset(seed=0)
    for t in range(3):
        obs, rewards, term, trunc, infos = vec.step(np.array([5, 5]))
    assert trunc.all() and not term.any()
    obs, rewards, term, trunc, infos = vec.step(np.array([5, 5]))
    assert (rewards == 0).all() and not trunc.any()
    np.testing.assert_array_equal(infos["pose"][0], np.eye(4))  # a fresh episode at the origin
    # partial reset keeps the other world going
    vec.step(np.array([0, 0]))
    obs, infos = vec.reset(options={"reset_mask": np.array([True, False])})
    assert infos["_pose"].tolist() == [True, False]


def test_bad_vector_input():
    vec = make_vec(2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="action"):
        vec.step(np.array([0, 42]))
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=[1, 2, 3])


def test_sb3_adapter_autoresets_in_the_same_step():
    from mirage_gym.sb3 import SB3VecEnv

    env = SB3VecEnv(make_vec(2, max_episode_steps=2).unwrapped, seed=0)
    env.reset()
    env.step(np.array([0, 5]))
    obs, rewards, dones, infos = env.step(np.array([0, 5]))
    assert dones.all()
    assert infos[0]["TimeLimit.truncated"] is True
    assert infos[0]["terminal_observation"].shape == (64, 64, 3)
    assert obs.shape == (2, 64, 64, 3)
    obs, rewards, dones, infos = env.step(np.array([0, 5]))
    assert not dones.any()
