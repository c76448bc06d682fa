"""A native batched ``VectorEnv``: N worlds, one generator forward per step for all of them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from mirage_gym.env import EnvAdapter
from mirage_gym.threads import OneCaller, env_work


class MirageWorldVectorEnv(OneCaller, VectorEnv):
    """``num_envs`` MirageWorld episodes batched through one world model.

    Matches ``N`` single ``MirageWorldEnv`` instances seeded ``seed, seed + 1, ...``.
    Episodes autoreset on the step after they end (``AutoresetMode.NEXT_STEP``, like
    Gymnasium's own vector envs): that step returns the new episode's first observation
    with reward 0. Keyword arguments are those of ``MirageWorldEnv``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, render_mode: str | None = None, **kwargs: Any):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.num_envs = num_envs
        self.render_mode = render_mode
        self._init_one_caller()
        self.adapter = EnvAdapter(num_worlds=num_envs, **kwargs)
        self.single_action_space = self.adapter.single_action_space
        self.single_observation_space = self.adapter.single_observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._ever_reset = np.zeros(num_envs, dtype=bool)
        self._frames = [None] * num_envs

    @property
    def world(self):
        return self.adapter.world

    @env_work
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset all worlds (or those in ``options["reset_mask"]``); ``seed`` is an int
        (world i gets ``seed + i``) or one seed per world."""
        if self.closed:
            raise gym.error.ClosedEnvironmentError("reset() on a closed MirageWorldVectorEnv")
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)))
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}")
        if not (mask | self._ever_reset).all():
            raise ValueError(f"options['reset_mask'] leaves worlds {np.flatnonzero(~(mask | self._ever_reset)).tolist()} "
                             "that were never reset: the first reset must include every world")
        seeds = self._checked_seeds(seed)
        start = self.adapter.checked_start(options)  # refused options leave every RNG as it was
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
            frame = self.adapter.reset_world(int(i), self._rngs[i], start)
            self._after_reset(int(i), frame)
        return self._batch_observations(), self._batch_infos(mask)

    @env_work
    def step(self, actions):
        if self.closed:
            raise gym.error.ClosedEnvironmentError("step() on a closed MirageWorldVectorEnv")
        if not self._ever_reset.all():
            raise gym.error.ResetNeeded(f"call reset() before step(): worlds {np.flatnonzero(~self._ever_reset).tolist()} "
                                        "were never reset")
        given = actions
        actions = None if isinstance(given, (dict, str, bytes)) else np.asarray(given)
        if actions is None or actions.ndim == 0 or len(actions) != self.num_envs:
            raise ValueError(f"actions must be an array of one action per env ({self.num_envs}), got {given!r}")
        resetting = self._needs_reset.copy()
        moves = [(np.zeros(6), False) if resetting[i] else self.adapter.task.motion(actions[i]) for i in range(self.num_envs)]
        start = self.adapter.checked_start({})
        frame = self.world.step(np.stack([motion for motion, _ in moves]))
        outcomes = [(0.0, False) if resetting[i] else self.adapter.task.outcome(i, frame, stop) for i, (_, stop) in enumerate(moves)]
        rewards = np.array([reward for reward, _ in outcomes], dtype=np.float64)
        self._elapsed += 1
        limit = self.adapter.max_episode_steps  # make_vec passes the registered 500
        truncations = self._elapsed >= limit if limit is not None else np.zeros(self.num_envs, dtype=bool)
        terminations = np.array([ended for _, ended in outcomes], dtype=bool)
        for i in range(self.num_envs):
            self._frames[i] = (frame, i)
        for i in np.flatnonzero(resetting):
            self._after_reset(int(i), self.adapter.reset_world(int(i), self._rngs[i], start))
            rewards[i] = 0.0
            terminations[i] = truncations[i] = False
        self._needs_reset = terminations | truncations
        return self._batch_observations(), rewards, terminations, truncations, self._batch_infos(np.ones(self.num_envs, bool))

    @env_work
    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if not self._ever_reset.all():
            raise gym.error.ResetNeeded("call reset() before render()")
        return tuple(frame.rgb[i].copy() for frame, i in self._frames if frame is not None)

    # ------------------------------------------------------------------ helpers

    def _checked_seeds(self, seed) -> list[int | None]:
        """One seed (or None) per world from ``seed``: None, an int (world i gets ``seed + i``)
        or a sequence of ``num_envs`` ints or Nones."""
        def ok(value):
            return value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0)

        if seed is None or (ok(seed) and not isinstance(seed, bool)):
            return [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        if isinstance(seed, (str, bytes, dict)) or not hasattr(seed, "__len__"):
            raise ValueError(f"seed must be None, a non-negative int or a list of {self.num_envs} of them, got {seed!r}")
        seeds = list(seed)
        if len(seeds) != self.num_envs or not all(ok(s) for s in seeds):
            raise ValueError(f"seed must be None, a non-negative int or a list of {self.num_envs} of them, got {seed!r}")
        return [None if s is None else int(s) for s in seeds]

    def _after_reset(self, i: int, frame) -> None:
        self._frames[i] = (frame, 0)
        self._elapsed[i] = 0
        self._needs_reset[i] = False
        self._ever_reset[i] = True

    def _batch_observations(self):
        out = create_empty_array(self.single_observation_space, self.num_envs)
        items = [self.adapter.observation(frame, j, world=i) for i, (frame, j) in enumerate(self._frames)]
        return concatenate(self.single_observation_space, items, out)

    def _batch_infos(self, mask: np.ndarray) -> dict:
        infos: dict = {}
        for i in np.flatnonzero(mask):
            frame, j = self._frames[i]
            infos = self._add_info(infos, self.adapter.info(frame, j, world=int(i)), int(i))
        return infos
