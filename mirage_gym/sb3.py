"""Train stable-baselines3 on the batched vector env.

SB3 cannot consume a Gymnasium ``VectorEnv``: it wants its own ``VecEnv`` API, with
same-step autoreset and the final observation in ``infos[i]["terminal_observation"]``.
:class:`SB3VecEnv` adapts :class:`~mirage_gym.vector_env.MirageWorldVectorEnv` (one
generator forward for all worlds) to it. Needs ``stable-baselines3`` installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from mirage_gym.vector_env import MirageWorldVectorEnv


def make_sb3_vec_env(env_id: str = "MirageWorld-v0", num_envs: int = 4, seed: int | None = None, **kwargs) -> VecMonitor:
    """``gym.make_vec`` with the native batched env, wrapped for SB3 (with episode stats)."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    return VecMonitor(SB3VecEnv(vec.unwrapped, seed=seed))


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a ``MirageWorldVectorEnv`` (same-step autoreset)."""

    def __init__(self, vec_env: MirageWorldVectorEnv, seed: int | None = None):
        self.vec = vec_env
        self._seed = seed
        self._actions = None
        super().__init__(vec_env.num_envs, vec_env.single_observation_space, vec_env.single_action_space)
        self.render_mode = getattr(vec_env, "render_mode", None)

    def reset(self):
        obs, infos = self.vec.reset(seed=self._seed)
        self._seed = None  # seed only the first reset, as SB3 does
        self.reset_infos = self._split_infos(infos)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.vec.step(self._actions)
        dones = terminated | truncated
        info_list = self._split_infos(infos)
        for i in np.flatnonzero(dones):
            info_list[i]["terminal_observation"] = _index(obs, i)
            info_list[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            new_obs, reset_infos = self.vec.reset(options={"reset_mask": dones})
            obs = _replace_rows(obs, new_obs, dones)
            split = self._split_infos(reset_infos)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = split[i]
        return obs, rewards.astype(np.float32), dones, info_list

    def close(self) -> None:
        self.vec.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.vec.render() or [None] * self.num_envs)

    def seed(self, seed: int | None = None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    # SB3 asks these of wrapped envs; the batched env has one shared configuration
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.vec, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.vec, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self.vec, method_name)(*method_args, **method_kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _split_infos(self, infos: dict) -> list[dict]:
        out = [{} for _ in range(self.num_envs)]
        for key, values in infos.items():
            if key.startswith("_"):
                continue
            present = infos.get("_" + key, np.ones(self.num_envs, bool))
            for i in np.flatnonzero(present):
                out[i][key] = values[i]
        return out


def _index(obs, i):
    if isinstance(obs, dict):
        return {k: v[i].copy() for k, v in obs.items()}
    return obs[i].copy()


def _replace_rows(obs, new_obs, mask):
    if isinstance(obs, dict):
        return {k: np.where(mask.reshape((-1,) + (1,) * (v.ndim - 1)), new_obs[k], v) for k, v in obs.items()}
    return np.where(mask.reshape((-1,) + (1,) * (obs.ndim - 1)), new_obs, obs)
