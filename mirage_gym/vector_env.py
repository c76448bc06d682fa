"""A native batched ``VectorEnv``: N worlds, one generator forward per step for all of them."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from mirage_gym.env import WorldAdapter


class MirageWorldVectorEnv(VectorEnv):
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
        self.core = WorldAdapter(num_worlds=num_envs, **kwargs)
        self.single_action_space = self.core.single_action_space
        self.single_observation_space = self.core.single_observation_space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = np.ones(num_envs, dtype=bool)
        self._frames = [None] * num_envs

    @property
    def world(self):
        return self.core.world

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset all worlds (or those in ``options["reset_mask"]``); ``seed`` is an int
        (world i gets ``seed + i``) or one seed per world."""
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must have shape ({self.num_envs},), got {mask.shape}")
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int or a list of {self.num_envs} seeds, got {len(seeds)}")
        obs, infos = [None] * self.num_envs, {}
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
            frame = self.core.reset_world(int(i), self._rngs[i], options)
            self._after_reset(int(i), frame)
        return self._batch_observations(), self._batch_infos(mask)

    def step(self, actions):
        actions = np.asarray(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"actions must have one entry per env ({self.num_envs}), got {len(actions)}")
        resetting = self._needs_reset.copy()
        moves = [(np.zeros(6), False) if resetting[i] else self.core.task.motion(actions[i]) for i in range(self.num_envs)]
        frame = self.world.step(np.stack([motion for motion, _ in moves]))
        outcomes = [(0.0, False) if resetting[i] else self.core.task.outcome(i, frame, stop) for i, (_, stop) in enumerate(moves)]
        rewards = np.array([reward for reward, _ in outcomes], dtype=np.float64)
        self._elapsed += 1
        limit = self.core.max_episode_steps  # make_vec passes the registered 500
        truncations = self._elapsed >= limit if limit is not None else np.zeros(self.num_envs, dtype=bool)
        terminations = np.array([ended for _, ended in outcomes], dtype=bool)
        for i in range(self.num_envs):
            self._frames[i] = (frame, i)
        for i in np.flatnonzero(resetting):
            self._after_reset(int(i), self.core.reset_world(int(i), self._rngs[i], {}))
            rewards[i] = 0.0
            terminations[i] = truncations[i] = False
        self._needs_reset = terminations | truncations
        return self._batch_observations(), rewards, terminations, truncations, self._batch_infos(np.ones(self.num_envs, bool))

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return tuple(frame.rgb[i].copy() for frame, i in self._frames if frame is not None)

    # ------------------------------------------------------------------ helpers

    def _after_reset(self, i: int, frame) -> None:
        self._frames[i] = (frame, 0)
        self._elapsed[i] = 0
        self._needs_reset[i] = False

    def _batch_observations(self):
        out = create_empty_array(self.single_observation_space, self.num_envs)
        items = [self.core.observation(frame, j, world=i) for i, (frame, j) in enumerate(self._frames)]
        return concatenate(self.single_observation_space, items, out)

    def _batch_infos(self, mask: np.ndarray) -> dict:
        infos: dict = {}
        for i in np.flatnonzero(mask):
            frame, j = self._frames[i]
            infos = self._add_info(infos, self.core.info(frame, j, world=int(i)), int(i))
        return infos
