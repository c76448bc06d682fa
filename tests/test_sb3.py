"""stable-baselines3 trains on the single env and on the batched vector env."""

import gymnasium as gym
import pytest
from stable_baselines3 import PPO

import mirage_gym  # noqa: F401
from mirage_gym.sb3 import make_sb3_vec_env
from stand_in import PoolingBackend


@pytest.mark.slow
def test_ppo_cnn_learns_on_the_single_env(tmp_path):
    env = gym.make("MirageWorld-v0", model=PoolingBackend(), max_episode_steps=64)
    model = PPO("CnnPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", device="cpu")
    obs, _ = env.reset(seed=0)
    action, _ = loaded.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))


@pytest.mark.slow
def test_ppo_cnn_learns_on_the_batched_env():
    venv = make_sb3_vec_env("MirageWorld-v0", num_envs=4, seed=0, model=PoolingBackend(), max_episode_steps=32)
    model = PPO("CnnPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    assert len(model.ep_info_buffer) >= 8 and model.ep_info_buffer[0]["l"] == 32


@pytest.mark.slow
def test_multi_input_policy_on_the_dict_observations():
    env = gym.make("MirageWorldDict-v0", model=PoolingBackend(), max_episode_steps=32)
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
