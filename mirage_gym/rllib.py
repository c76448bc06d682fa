"""Ray RLlib glue: MirageWorld as an RLlib env, each env runner stepping the batched vector env.

    import mirage_gym.rllib as mrl
    from ray.rllib.algorithms.ppo import PPOConfig

    name = mrl.register("MirageWorld-v0")              # tune registry: remote runners find it
    config = mrl.configure(PPOConfig(), name, num_env_runners=2, num_envs_per_env_runner=8)
    algo = config.build_algo()

What this module settles, so users do not have to:

- **The env a runner asks for.** In ``gym_env_vectorize_mode="vector_entry_point"`` RLlib
  calls the registered creator with ``num_envs`` in its config and needs a
  ``gymnasium.vector.VectorEnv``; :func:`make_env` then returns the batched
  :class:`~mirage_gym.vector_env.MirageWorldVectorEnv` (one generator forward for all worlds
  of the runner). Without ``num_envs`` (RLlib's ``"sync"`` mode) it returns one
  ``gym.make`` env.
- **The id inside remote runners.** Runners are fresh processes that never import
  mirage_gym, so a gymnasium id alone is unknown there; :func:`register` puts a creator
  into Ray Tune's registry, which Ray ships to every runner (on every node).
- **Seeds.** RLlib resets runner ``w`` with ``seed + w`` (``config.debugging(seed=...)``),
  and in vector mode the creator's config is a plain dict without the worker index. The
  vector env's own rule (world ``i`` gets ``seed + i``) would then give runner 1's world 1
  the seed of runner 2's world 0. :class:`DistinctWorldSeeds` maps a runner's seed ``s`` to
  per-world seeds drawn from ``numpy.random.SeedSequence((s, i))``: reproducible, and
  distinct across runners and worlds.
- **uint8 frames.** RLlib's default CNN encoder does not cast its input;
  :class:`FramesToFloat` (an env-to-module connector) hands it float32 frames in [0, 1].
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper

import mirage_gym  # noqa: F401  (registers the gymnasium ids in this process)

try:
    from ray.rllib.connectors.env_to_module.observation_preprocessor import SingleAgentObservationPreprocessor
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError("mirage_gym.rllib needs Ray RLlib: pip install -e '.[rllib]' (ray[rllib]>=2.52)") from error

#: A conv stack for 64x64 frames (Nature-CNN sizes; RLlib pads "same", so 64 -> 16 -> 8 -> 8).
CONV_FILTERS_64 = [[32, [8, 8], 4], [64, [4, 4], 2], [64, [3, 3], 1]]


def start_local_ray(num_cpus: int = 2, **init_kwargs: Any):
    """``ray.init`` of a one-machine Ray on loopback only: ``num_cpus`` bounded, no
    dashboard, no usage-stats report. Returns ``ray.init``'s context.

    Ray would otherwise name this host by its outward IP (found by routing towards a public
    address) and give that to its workers; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set here
    for the processes Ray starts, and its constant for this one) keeps every address loopback.
    """
    import os

    import ray
    from ray._private import ray_constants

    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1:
        raise ValueError(f"num_cpus must be a positive int, got {num_cpus!r}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    return ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **init_kwargs)


def register(name: str = "MirageWorld-v0", env_id: str | None = None, **env_kwargs: Any) -> str:
    """Register ``name`` with Ray Tune's env registry; returns ``name`` for ``config.environment``.

    ``env_id`` is the gymnasium id to build (default: ``name`` when it is a registered
    MirageWorld id). ``env_kwargs`` go to every env (e.g. ``model="tiny"``,
    ``max_episode_steps=256``); keys of RLlib's ``env_config`` override them.
    """
    from ray.tune.registry import register_env

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    env_id = name if env_id is None else env_id
    if env_id not in gym.registry:
        known = sorted(i for i in gym.registry if "Mirage" in i)
        raise ValueError(f"env_id must be a registered gymnasium id such as {known}, got {env_id!r}")
    register_env(name, _Creator(env_id, env_kwargs))
    return name


class _Creator:
    """The callable Tune stores (picklable: a module-level class, not a closure)."""

    def __init__(self, env_id: str, env_kwargs: dict):
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)

    def __call__(self, config: dict | None = None):
        return make_env(config, self.env_id, **self.env_kwargs)


def make_env(config: dict | None = None, env_id: str = "MirageWorld-v0", **env_kwargs: Any):
    """RLlib's env creator: the batched vector env when ``config`` has ``num_envs``, else one env.

    ``config`` is RLlib's ``env_config`` (an ``EnvContext``, or a plain dict in vector mode);
    its keys are env arguments and override ``env_kwargs``.
    """
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of env arguments (RLlib's env_config), got {type(config).__name__}")
    kwargs = {**env_kwargs, **dict(config or {})}
    num_envs = kwargs.pop("num_envs", None)
    if num_envs is None:
        return gym.make(env_id, **kwargs)
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    env = gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **kwargs)
    return DistinctWorldSeeds(env)


def world_seeds(seed: int, num_envs: int) -> list[int]:
    """Per-world reset seeds of a runner reset with ``seed``: ``SeedSequence((seed, i))``,
    so runners seeded ``s`` and ``s + 1`` share no world seed (unlike ``s + i``)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return [int(np.random.SeedSequence((int(seed), i)).generate_state(1, np.uint32)[0]) for i in range(num_envs)]


class DistinctWorldSeeds(VectorWrapper):
    """Turns an int reset seed into :func:`world_seeds` (lists and ``None`` pass through).

    ``last_seeds`` holds the per-world seeds of the last seeded reset (``None`` before one).
    """

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self.last_seeds: list[int] | None = None

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seed = world_seeds(int(seed), self.num_envs)
        if seed is not None:
            self.last_seeds = [None if s is None else int(s) for s in seed]
        return self.env.reset(seed=seed, options=options)


class FramesToFloat(SingleAgentObservationPreprocessor):
    """Env-to-module connector: uint8 image observations (HxWxC, or the ``rgb`` entry of a
    Dict observation) become float32 in [0, 1], the input RLlib's CNN encoders expect."""

    def recompute_output_observation_space(self, input_observation_space, input_action_space):
        return _float_space(input_observation_space)

    def preprocess(self, observation, episode):
        if isinstance(observation, dict):
            return {key: _to_float(value) for key, value in observation.items()}
        return _to_float(observation)


def _is_frame_space(space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def _float_space(space):
    if isinstance(space, spaces.Dict):
        return spaces.Dict({key: _float_space(sub) for key, sub in space.spaces.items()})
    if _is_frame_space(space):
        return spaces.Box(0.0, 1.0, space.shape, np.float32)
    return space


def _to_float(value):
    value = np.asarray(value)
    return value.astype(np.float32) / np.float32(255.0) if value.dtype == np.uint8 else value


def frames_to_float(env=None, spaces=None, device=None) -> FramesToFloat:
    """The ``env_to_module_connector`` factory RLlib calls on each runner."""
    return FramesToFloat()


def configure(
    config,
    name: str = "MirageWorld-v0",
    num_env_runners: int = 1,
    num_envs_per_env_runner: int = 8,
    env_config: dict | None = None,
    conv_filters: list | None = None,
):
    """Point an RLlib ``AlgorithmConfig`` (new API stack) at ``name`` (see :func:`register`):
    ``num_env_runners`` runners, each stepping one batched vector env of
    ``num_envs_per_env_runner`` worlds, frames cast by :class:`FramesToFloat`, and a CNN for
    64x64 frames (``conv_filters``, default :data:`CONV_FILTERS_64`). Returns ``config``."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import ENV_CREATOR, _global_registry

    if not _global_registry.contains(ENV_CREATOR, name):
        raise ValueError(
            f"name must be registered with mirage_gym.rllib.register(...) first, so remote env runners "
            f"can build it (a bare gymnasium id is unknown in a runner that never imported mirage_gym), got {name!r}"
        )
    for arg, value, least in (("num_env_runners", num_env_runners, 0), ("num_envs_per_env_runner", num_envs_per_env_runner, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{arg} must be an int >= {least}, got {value!r}")
    return (
        config.environment(name, env_config=dict(env_config or {}))
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            gym_env_vectorize_mode="vector_entry_point",
            env_to_module_connector=frames_to_float,
        )
        .rl_module(model_config=DefaultModelConfig(conv_filters=conv_filters or CONV_FILTERS_64))
    )
