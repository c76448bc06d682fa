"""``MirageWorldEnv``: the Gymnasium adapter over the world core."""

from __future__ import annotations

import functools
import importlib.util
import numbers
import threading
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from mirage_gym.geometry import Action, RigConfig, checked_motion, discrete_to_continuous, pose_from_state
from mirage_gym.constants import MEMORY_CAPACITY, MOVE_STEP, SCENE_SEEDS, TURN_STEP_DEG
from mirage_gym.memory import MEMORIES, static_keep_mask
from mirage_gym.threads import OneCaller, check_num_threads, env_work
from mirage_gym.world import World, WorldConfig, WorldFrame, resize_image

ACTION_MODES = ("discrete", "continuous")
OBS_MODES = ("rgb", "rgbd", "dict")
POSE_BOUND = 1e4  # metres: finite bounds keep the checkers and normalising wrappers happy
HAS_PYGAME = importlib.util.find_spec("pygame") is not None
ENV_TENSORS = ("path", "frame.rgb")
CONTINUOUS_MEANINGS = ("MOVE_RIGHT", "MOVE_DOWN", "MOVE_FORWARD", "TURN_RIGHT", "LOOK_UP", "ROLL")  # what a snapshot holds beyond the world's own tensors


def shared_backend(model, addon=None, depth_model=None, device="cpu", dtype="float32"):
    """The env layer's world model: :func:`mirage_gym.models.load_backend`'s model, shared
    between the envs of a process, from ``"tiny"`` (the shipped weights), a local directory (the tiny
    layout, or a diffusers Wan2.2-TI2V layout with ``addon`` and ``depth_model``), or an
    object that already implements the backend protocol (for tests and custom models).

    Loaded models are shared between the envs of a process: a backend holds weights only
    (every world's state lives in its :class:`~mirage_gym.world.World`). The cache is
    thread-safe (envs made in several threads at once load a model once) and keyed by the
    resolved path: a directory deleted or changed after its first load is still served from
    memory until the process ends."""
    if not isinstance(model, (str, Path)):
        if addon is not None or depth_model is not None:
            raise ValueError("addon and depth_model apply to a model directory, not to a backend object")
        return checked_backend_object(model)

    def key(path):
        return None if path is None else str(Path(path).resolve())

    with _CACHE_LOCK:
        return _cached_backend("tiny" if str(model) == "tiny" else key(model), key(addon), key(depth_model),
                               str(torch.device(device)), str(dtype).removeprefix("torch."))


_CACHE_LOCK = threading.Lock()
BACKEND_PROTOCOL = ("latent_channels", "downsample", "encode", "decode", "generate")


def checked_backend_object(model):
    """``model`` if it implements the world's backend protocol, else ``ModelLoadError``."""
    from mirage_gym.models.backend import ModelLoadError

    lacking = [name for name in BACKEND_PROTOCOL if not hasattr(model, name)]
    if lacking:
        raise ModelLoadError(f"model must be 'tiny', a local model directory or a world model object "
                             f"(with {', '.join(BACKEND_PROTOCOL)}); got {model!r}, which lacks {lacking}")
    return model


@functools.lru_cache(maxsize=4)
def _cached_backend(model: str, addon: str | None, depth_model: str | None, device: str, dtype: str):
    from mirage_gym.models.backend import load_backend

    return load_backend(model, device=device, addon=addon, depth_model=depth_model, dtype=dtype)


class MirageWorldEnv(OneCaller, gym.Env):
    """Explore a world generated frame by frame by a diffusion model with latent memory.

    ## Description
    Each step moves the camera and the world model generates the next frame, conditioned
    on its own latents remembered in 3D and projected onto the new camera, so places look
    the same when the agent comes back. The world starts from a procedural scene chosen by
    the reset seed, or from any image given in ``reset(options={"image": ...})``.

    ## Action Space
    ``action_mode="discrete"`` (default): ``Discrete(9)``, the named :class:`~mirage_gym.geometry.Action`
    members: 0 move forward, 1 move backward, 2 strafe left, 3 strafe right, 4 turn left,
    5 turn right, 6 look up, 7 look down (pitch clamped), 8 no-op. Steps default to 0.2 m
    and 15 degrees. ``action_mode="continuous"``: ``Box(-1, 1, (6,), float32)`` scaled to
    (dx right, dy down, dz forward, dyaw, dpitch, droll) per step; walking is horizontal.
    Goal tasks add STOP: ``Discrete(10)`` (:class:`~mirage_gym.tasks.GoalAction`, 9 = STOP),
    or ``Box(-1, 1, (7,))`` whose 7th component > 0 is STOP.

    ## Observation Space
    ``obs_mode="rgb"`` (default): ``Box(0, 255, (H, W, 3), uint8)``, H = W = 64.
    ``"rgbd"``: ``Dict(rgb, depth)`` with depth ``Box(0, max_depth, (H, W, 1), float32)``,
    z-depth in metres, sky and anything beyond ``max_depth`` reported as ``max_depth``.
    ``"dict"``: ``rgbd`` plus ``pose``, the 4x4 camera-to-world matrix flattened row-major
    to (16,) float32 (bounded by +-1e4 m), so SB3's ``MultiInputPolicy`` takes it as is.
    Goal tasks make it a ``Dict`` (``rgb`` plus the above) with ``goal`` (imagenav, homing:
    the goal view, uint8 like ``rgb``) or ``pointgoal`` (pointnav: distance in metres and
    bearing in radians, positive to the right, in the agent's frame).

    ## Rewards
    Task "explore": ``reward_per_voxel`` for every 0.25 m voxel of static geometry seen for
    the first time in the episode. A move blocked by near geometry earns ``collision_penalty``.
    Goal tasks (Habitat's): the decrease in geodesic distance to the goal, ``success_reward``
    (2.5) on success, ``slack_reward`` (-0.01) every step. See :mod:`mirage_gym.tasks`.

    ## Starting State
    The camera at the origin of the world frame (the camera frame at reset), level.

    ## Episode End
    No termination in the explore task; goal tasks terminate on STOP (or, with
    ``task_options={"auto_stop": True}``, on arrival) and report ``info["success"]``,
    ``info["spl"]``, ``info["distance_to_goal"]``, ``path_length`` and
    ``shortest_path_length``. Truncation after ``max_episode_steps`` steps: the
    registered ids set 500, applied by ``gym.make``'s ``TimeLimit`` (``gym.make(id,
    max_episode_steps=N)`` overrides it) and by the vector env's own per-world counters.

    ## Arguments
    ``gym.make("MirageWorld-v0", render_mode=None, width=64, height=64, fov_deg=90,
    action_mode="discrete", obs_mode="rgb", model="tiny", move_step=0.2, turn_step_deg=15,
    pitch_limit_deg=60, memory="latent", memory_capacity=262144, use_memory=True, frames_per_step=1,
    max_episode_steps=None, scene_kind=None, dynamic_objects=0, render_map=False, reward_per_voxel=0.05,
    collision_penalty=-0.1, max_depth=20.0, num_threads=1, addon=None, depth_model=None, device="cpu",
    dtype="float32", task="explore", task_options=None)``. ``task`` is ``"explore"``, ``"imagenav"``,
    ``"pointnav"`` or ``"homing"``; ``task_options`` sets the goal tasks'
    :class:`~mirage_gym.tasks.TaskConfig` (success radius and angle, rewards, goal distances).
    ``model`` is ``"tiny"`` (shipped weights) or a local model directory: the tiny layout, or
    a diffusers Wan2.2-TI2V-5B directory, which also takes ``addon`` (a trained Mirage
    add-on directory; without it the add-on is zero and the generator is the base model),
    ``depth_model`` (a local metric depth-estimation directory, required), ``dtype``
    (``"float32"`` or ``"bfloat16"``); ``device`` places the model and
    the memory (``"cpu"`` default). A Wan step yields 4 video frames: the observation is
    the last, ``env.unwrapped.step_frames`` holds all of them. ``use_memory=False``
    hides memory from the generator (the ablation). ``memory`` is ``"latent"`` (Mirage's
    latent spatial memory, read at latent resolution) or ``"color"`` (the Voyager /
    Spatia-style RGB point cloud, rendered at full resolution and re-encoded by the codec
    every step: the baseline); ``memory_capacity`` caps the latent memory's entries. ``info`` holds fresh numpy copies of
    ``pose``, ``intrinsics``, memory stats, ``novelty`` and ``collision``.
    ``num_threads`` is how many torch threads the env's own work (reset, step, snapshot
    loads) uses, torch's setting being put back afterwards; the default 1 cannot
    oversubscribe the CPU when envs run side by side (``AsyncVectorEnv``, SB3's
    ``SubprocVecEnv``, RLlib runners each get one thread), ``None`` uses torch's setting.
    Results can differ by one grey level between thread counts (float sums in another
    order); a fixed ``num_threads`` keeps a seeded episode identical across machines.

    ## Threads
    An env is used by one thread at a time: a call from a second thread while one is
    inside ``reset``, ``step``, ``render`` or a snapshot call raises ``RuntimeError``
    (nothing is changed). Give each thread its own env, or use the vector env.

    ## Vectorized environment
    ``gym.make_vec("MirageWorld-v0", num_envs=N, vectorization_mode="vector_entry_point")``
    gives :class:`~mirage_gym.vector_env.MirageWorldVectorEnv`: one generator forward for
    all N worlds.

    ## Version History
    * v0: initial release; goal tasks (``MirageImageNav-v0``, ``MiragePointNav-v0``,
      ``MirageHoming-v0``) added as presets of the same env.
    """

    # "human" (a pygame window) only where pygame is installed: the modes listed are the modes that work
    metadata = {"render_modes": ["rgb_array", "human"] if HAS_PYGAME else ["rgb_array"], "render_fps": 8}

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode == "human" and not HAS_PYGAME:
            raise gym.error.DependencyNotInstalled(
                "render_mode='human' opens a pygame window; pygame is not installed: pip install 'mirage-gym[play]'"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self._init_one_caller()
        self.adapter = EnvAdapter(num_worlds=1, **kwargs)
        self.action_space = self.adapter.single_action_space
        self.observation_space = self.adapter.single_observation_space
        self._frame = None
        self._path: list[np.ndarray] = []
        self._elapsed = 0
        self._window = None

    @property
    def world(self) -> World:
        return self.adapter.world

    @env_work
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if options and "snapshot" in options:
            if seed is not None or len(options) > 1:
                raise ValueError("options['snapshot'] restores a whole episode, its RNG included: pass it alone, "
                                 f"without seed or other options (got seed={seed!r}, options {sorted(options)})")
            return self.load_snapshot(options["snapshot"])
        start = self.adapter.checked_start(options or {})  # refused options leave the RNG as it was
        super().reset(seed=seed)
        frame = self.adapter.reset_world(0, self.np_random, start)
        self._elapsed = 0
        self._path = [frame.pose[0][:3, 3].copy()]
        self._frame = frame
        return self.adapter.observation(frame, 0), self.adapter.info(frame, 0)

    @property
    def step_frames(self) -> np.ndarray | None:
        """Every frame the last reset or step generated, (T, H, W, 3) uint8, the observation
        last (T = 4 per step for Wan2.2, ``frames_per_step`` for the tiny model)."""
        return None if self._frame is None or self._frame.frames is None else self._frame.frames[0].copy()

    @env_work
    def step(self, action):
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        motion, stop = self.adapter.task.motion(action)
        frame = self.world.step(motion[None])
        reward, terminated = self.adapter.task.outcome(0, frame, stop)
        self._elapsed += 1
        self._frame = frame
        self._path.append(frame.pose[0][:3, 3].copy())
        limit = self.adapter.max_episode_steps  # None under gym.make: TimeLimit truncates
        truncated = limit is not None and self._elapsed >= limit
        if self.render_mode == "human":
            self.render()
        return self.adapter.observation(frame, 0), reward, terminated, bool(truncated), self.adapter.info(frame, 0)

    @env_work
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self._frame is None:
            return None
        image = self._frame.rgb[0]
        if self.adapter.render_map:
            from mirage_gym.display import with_map

            image = with_map(image, self.world.memory.points(0).cpu().numpy(), np.asarray(self._path), self._frame.pose[0])
        if self.render_mode == "rgb_array":
            return image.copy()
        from mirage_gym.display import show

        self._window = show(self._window, image, self.metadata["render_fps"])
        return None

    def close(self):
        if self._window is not None:
            from mirage_gym.display import close_window

            close_window(self._window)
            self._window = None

    @env_work
    def save_snapshot(self, path) -> None:
        """Save the whole episode (world, memory, RNGs, step count) to ``path`` atomically.

        Under ``gym.make`` wrappers, :func:`mirage_gym.save_snapshot` does the same."""
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before save_snapshot()")
        from mirage_gym import snapshot

        tensors, meta = self.world.snapshot(0)
        tensors["path"] = torch.as_tensor(np.asarray(self._path, dtype=np.float64))
        tensors["frame.rgb"] = torch.as_tensor(self._frame.rgb[0])
        task_tensors, meta["task"] = self.adapter.task.snapshot(0)
        tensors.update(task_tensors)
        meta["env"] = {
            "elapsed": self._elapsed,
            "np_random": self.np_random.bit_generator.state,
            "novelty": float(self._frame.novelty[0]),
            "collision": bool(self._frame.collision[0]),
        }
        snapshot.save_snapshot(path, tensors, meta)

    @env_work
    def load_snapshot(self, path):
        """Continue from a snapshot; returns ``(observation, info)`` as at the save.

        All or nothing: the whole file is checked first (its checksum over tensors and
        metadata; every tensor's name, dtype, shape and finiteness; the RNG state; the
        episode clock; and that the observation it gives lies in the observation space).
        Any refusal raises ``SnapshotError`` (a ``ValueError``) and leaves the env as it was.

        ``reset(options={"snapshot": path})`` does the same. Both restore the env's own
        episode clock; under ``gym.make`` a ``TimeLimit`` wrapper keeps a step count of its
        own: :func:`mirage_gym.load_snapshot(env, path) <mirage_gym.env.load_snapshot>`
        sets it too.
        """
        from mirage_gym import snapshot

        tensors, meta = snapshot.load_snapshot(path)
        try:
            staged = self._checked_snapshot(tensors, meta)
            task_state = self.adapter.task.load_state(tensors, meta.get("task"))
            self.world.restore(0, {k: v for k, v in tensors.items()
                                   if k not in ENV_TENSORS and not k.startswith("task.")}, meta)
        except snapshot.SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise snapshot.SnapshotError(f"snapshot {path} does not fit this env: {exc}") from exc
        self._np_random, self._elapsed, self._path, self._frame = staged
        self.adapter.task.set_state(0, task_state)
        return self.adapter.observation(self._frame, 0), self.adapter.info(self._frame, 0)

    def _checked_snapshot(self, tensors: dict, meta: dict):
        """The env's part of a snapshot (RNG, clock, path, frame), checked; raises ``ValueError``."""
        differ = self.world.config.differences(meta.get("world"))
        if differ:
            raise ValueError(f"snapshot was made with a different world configuration: {differ}")
        env_meta = meta["env"]
        fields = {"elapsed", "np_random", "novelty", "collision"}
        if not isinstance(env_meta, dict) or set(env_meta) != fields:
            raise ValueError(f"metadata 'env' must hold exactly {sorted(fields)}")
        elapsed, novelty, collision = env_meta["elapsed"], env_meta["novelty"], env_meta["collision"]
        if type(elapsed) is not int or elapsed < 0 or elapsed != int(tensors["steps"]):
            raise ValueError(f"'elapsed' must be the world's step count {int(tensors['steps'])}, got {elapsed!r}")
        if type(novelty) is not float or not 0.0 <= novelty <= 1.0:
            raise ValueError(f"'novelty' must be a float in [0, 1], got {novelty!r}")
        if type(collision) is not bool:
            raise ValueError(f"'collision' must be a bool, got {collision!r}")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = env_meta["np_random"]
        path_xyz, rgb = tensors["path"], tensors["frame.rgb"]
        if path_xyz.dtype != torch.float64 or tuple(path_xyz.shape) != (elapsed + 1, 3) or not torch.isfinite(path_xyz).all():
            raise ValueError(f"tensor 'path' must be finite float64 of shape ({elapsed + 1}, 3), got {path_xyz.dtype} "
                             f"{tuple(path_xyz.shape)}")
        c = self.world.config
        if rgb.dtype != torch.uint8 or tuple(rgb.shape) != (c.height, c.width, 3):
            raise ValueError(f"tensor 'frame.rgb' must be uint8 of shape ({c.height}, {c.width}, 3), got {rgb.dtype} "
                             f"{tuple(rgb.shape)}")
        frame = WorldFrame(
            rgb=rgb.numpy()[None].copy(),
            depth=tensors["depth"].numpy()[None].astype(np.float32),
            pose=pose_from_state(tensors["state"].numpy()[None]),
            novelty=np.array([novelty]),
            new_voxels=np.zeros(1, dtype=np.int64),
            collision=np.array([collision]),
        )
        if not self.observation_space.contains(self.adapter.observation(frame, 0)):
            raise ValueError("its observation lies outside the observation space (pose beyond +-1e4 m?)")
        return rng, elapsed, list(path_xyz.numpy()), frame

    def get_action_meanings(self) -> list[str]:
        """What each action does, as ALE and MiniWorld name them: the :class:`Action` member
        names in id order (discrete mode), or the six components of a continuous action."""
        if self.adapter.action_mode == "discrete":
            return [a.name for a in Action]
        return list(CONTINUOUS_MEANINGS)

    def get_keys_to_action(self) -> dict:
        """Keyboard map for ``gymnasium.utils.play.play`` (discrete mode)."""
        return {
            ("w",): Action.MOVE_FORWARD,
            ("s",): Action.MOVE_BACKWARD,
            ("a",): Action.STRAFE_LEFT,
            ("d",): Action.STRAFE_RIGHT,
            ("q",): Action.TURN_LEFT,
            ("e",): Action.TURN_RIGHT,
            ("r",): Action.LOOK_UP,
            ("f",): Action.LOOK_DOWN,
        }


def reset_scene_seed(seed: int) -> int:
    """The procedural scene seed ``reset(seed=seed)`` starts from (it draws one from its
    freshly seeded RNG unless ``options["scene_seed"]`` is given)."""
    from gymnasium.utils import seeding

    return int(seeding.np_random(seed)[0].integers(SCENE_SEEDS))


def save_snapshot(env: gym.Env, path) -> None:
    """Save a ``MirageWorldEnv`` episode, wrapped (``gym.make``) or not, to ``path``."""
    env.unwrapped.save_snapshot(path)


def load_snapshot(env: gym.Env, path):
    """Continue a ``MirageWorldEnv``, wrapped (``gym.make``) or not, from a snapshot;
    returns ``(observation, info)`` as at the save.

    The load goes through the wrappers as ``env.reset(options={"snapshot": path})`` (a
    snapshot starts an episode, so ``OrderEnforcing``, the env checker and episode
    statistics see a reset); then every ``TimeLimit`` wrapper's step count is set to the
    snapshot's episode clock, so a snapshot saved at step 20 and loaded into a 10-step env
    is truncated on its next step. A refused load raises ``SnapshotError`` and leaves the
    env and those step counts as they were.
    """
    limits = []
    wrapper = env
    while isinstance(wrapper, gym.Wrapper):
        if isinstance(wrapper, gym.wrappers.TimeLimit):
            limits.append((wrapper, wrapper._elapsed_steps))
        wrapper = wrapper.env
    try:
        obs, info = env.reset(options={"snapshot": path})
    except BaseException:
        for limit, count in limits:
            limit._elapsed_steps = count
        raise
    for limit, _ in limits:
        limit._elapsed_steps = env.unwrapped._elapsed
    return obs, info


class EnvAdapter:
    """The env layer's adapter over the world core (:class:`~mirage_gym.world.World`): what the
    single and the vector env share: arguments, spaces, the batched
    world, and how frames become observations, rewards and infos."""

    def __init__(
        self,
        num_worlds: int = 1,
        width: int = 64,
        height: int = 64,
        fov_deg: float = 90.0,
        action_mode: str = "discrete",
        obs_mode: str = "rgb",
        model: Any = "tiny",
        addon: str | Path | None = None,
        depth_model: str | Path | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        move_step: float = MOVE_STEP,
        turn_step_deg: float = TURN_STEP_DEG,
        pitch_limit_deg: float = 60.0,
        memory: str = "latent",
        memory_capacity: int | None = MEMORY_CAPACITY,
        use_memory: bool = True,
        frames_per_step: int = 1,
        max_episode_steps: int | None = None,
        scene_kind: str | None = None,
        dynamic_objects: int = 0,
        render_map: bool = False,
        reward_per_voxel: float = 0.05,
        collision_penalty: float = -0.1,
        max_depth: float = 20.0,
        num_threads: int | None = 1,
        task: str = "explore",
        task_options: dict | None = None,
    ):
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        check_arguments(width=width, height=height, fov_deg=fov_deg, move_step=move_step, turn_step_deg=turn_step_deg,
                        pitch_limit_deg=pitch_limit_deg, memory=memory, memory_capacity=memory_capacity,
                        use_memory=use_memory,
                        frames_per_step=frames_per_step, max_episode_steps=max_episode_steps, scene_kind=scene_kind,
                        dynamic_objects=dynamic_objects, render_map=render_map, reward_per_voxel=reward_per_voxel,
                        collision_penalty=collision_penalty, max_depth=max_depth, device=device, dtype=dtype)
        self.num_threads = check_num_threads(num_threads)
        self.action_mode = action_mode
        self.obs_mode = obs_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.scene_kind = scene_kind
        self.dynamic_objects = int(dynamic_objects)
        self.render_map = render_map
        self.reward_per_voxel = float(reward_per_voxel)
        self.collision_penalty = float(collision_penalty)
        self.max_depth = float(max_depth)
        config = WorldConfig(
            width=width,
            height=height,
            fov_deg=fov_deg,
            rig=RigConfig(
                move_step=move_step, turn_step_deg=turn_step_deg, pitch_step_deg=turn_step_deg, pitch_limit_deg=pitch_limit_deg
            ),
            use_memory=use_memory,
            memory=memory,
            memory_capacity=memory_capacity,
            frames_per_step=frames_per_step,
        )
        backend = shared_backend(model, addon=addon, depth_model=depth_model, device=device, dtype=dtype)
        self.world = World(backend, config, num_worlds=num_worlds, device=device)
        self.single_action_space = self.make_action_space(action_mode)
        self.single_observation_space = self.make_observation_space(obs_mode, height, width, self.max_depth)
        from mirage_gym.tasks import make_task

        self.task = make_task(task, task_options, self)
        self.single_action_space = self.task.action_space(self.single_action_space)
        self.single_observation_space = self.task.observation_space(self.single_observation_space)

    # ------------------------------------------------------------------ spaces

    @staticmethod
    def make_action_space(action_mode: str) -> spaces.Space:
        if action_mode == "discrete":
            return spaces.Discrete(len(Action))
        return spaces.Box(-1.0, 1.0, (6,), np.float32)

    @staticmethod
    def make_observation_space(obs_mode: str, height: int, width: int, max_depth: float) -> spaces.Space:
        rgb = spaces.Box(0, 255, (height, width, 3), np.uint8)
        if obs_mode == "rgb":
            return rgb
        parts = {"rgb": rgb, "depth": spaces.Box(0.0, max_depth, (height, width, 1), np.float32)}
        if obs_mode == "dict":
            parts["pose"] = spaces.Box(-POSE_BOUND, POSE_BOUND, (16,), np.float32)
        return spaces.Dict(parts)

    def reset_world(self, index: int, np_random: np.random.Generator, start: dict):
        """Start world ``index`` from :meth:`checked_start`'s image or the procedural scene of ``np_random``."""
        self.scene = None  # initial_frame keeps the procedural scene it renders, for the task
        rgb, depth, keep, fov = self.initial_frame(start, np_random)
        noise_seed = int(np_random.integers(2**31))
        frame = self.world.reset(index, rgb, depth, keep, fov_deg=fov, seed=noise_seed, prompt=start.get("prompt"))
        return self.task.reset(index, frame, np_random, self.scene)

    def reward(self, frame, index: int) -> float:
        reward = self.reward_per_voxel * float(frame.new_voxels[index])
        if frame.collision[index]:
            reward += self.collision_penalty
        return float(reward)

    # ------------------------------------------------------------------ helpers

    def action_to_motion(self, action) -> np.ndarray:
        """The unit 6-DoF motion for an action of this env's action space (precise errors)."""
        if self.action_mode == "discrete":
            a = np.asarray(action)
            if a.shape != () or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"action must be an integer in [0, {len(Action) - 1}], got {action!r}")
            return discrete_to_continuous(int(a))
        return checked_motion(action, "action", (6,))

    def checked_start(self, options: dict) -> dict:
        """Reset options checked and prepared (the user's image resized), without touching
        any RNG: a refused reset changes nothing."""
        known = {"image", "depth", "dynamic_mask", "fov_deg", "scene_seed", "image_fit", "prompt"}
        if not isinstance(options, dict):
            raise ValueError(f"options must be a dict or None, got {type(options).__name__}")
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected some of {sorted(known)}")
        fov = options.get("fov_deg", self.world.config.fov_deg)
        if not _is_real(fov) or not 0 < fov < 180:
            raise ValueError(f"options['fov_deg'] must be a number in (0, 180) degrees, got {fov!r}")
        prompt = options.get("prompt")
        self.world.check_prompt(prompt)
        if "image" in options:
            if "scene_seed" in options:
                raise ValueError("options 'image' and 'scene_seed' exclude each other: the image is the scene")
            rgb, depth, keep, fov = user_frame(options, self.world.config.height, self.world.config.width, float(fov))
            return {"rgb": rgb, "depth": depth, "keep": keep, "fov": fov, "prompt": prompt}
        if {"depth", "dynamic_mask", "image_fit"} & set(options):
            raise ValueError("options 'depth', 'dynamic_mask' and 'image_fit' need options['image']")
        scene_seed = options.get("scene_seed")
        if scene_seed is not None and not (_is_integer(scene_seed) and scene_seed >= 0):
            raise ValueError(f"options['scene_seed'] must be a non-negative int, got {scene_seed!r}")
        return {"scene_seed": None if scene_seed is None else int(scene_seed), "fov": float(fov), "prompt": prompt}

    def initial_frame(self, start: dict, np_random: np.random.Generator):
        """The seed frame: the user's image or the procedural scene of ``start``'s scene seed,
        else of one drawn from ``np_random``."""
        if "rgb" in start:
            return start["rgb"], start["depth"], start["keep"], start["fov"]
        from mirage_gym.scenes import make_scene

        c = self.world.config
        scene_seed = start["scene_seed"] if start["scene_seed"] is not None else int(np_random.integers(SCENE_SEEDS))
        scene = make_scene(scene_seed, kind=self.scene_kind, dynamic_objects=self.dynamic_objects)
        self.scene = scene
        r = scene.render(np.eye(4), c.width, c.height, fov_deg=start["fov"])
        keep = static_keep_mask(r.depth, r.labels, far=c.far).numpy()
        return r.rgb, r.depth, keep, start["fov"]

    def observation(self, frame, index: int, world: int | None = None):
        """Observation of row ``index`` of ``frame``, which shows world ``world`` (default: the same)."""
        world = index if world is None else world
        rgb = frame.rgb[index].copy()
        if self.obs_mode == "rgb":
            return self.task.observation(world, rgb)
        depth = np.nan_to_num(frame.depth[index], posinf=self.max_depth).clip(0, self.max_depth)
        obs = {"rgb": rgb, "depth": depth[..., None].astype(np.float32)}
        if self.obs_mode == "dict":
            obs["pose"] = frame.pose[index].astype(np.float32).reshape(16)
        return self.task.observation(world, obs)

    def info(self, frame, index: int, world: int | None = None) -> dict:
        """Info of row ``index`` of ``frame``, which shows world ``world`` (default: the same)."""
        world = index if world is None else world
        stats = self.world.memory_stats(world)
        return {
            "pose": frame.pose[index].copy(),
            "intrinsics": np.array(self.world.intrinsics[world], dtype=np.float64),
            "memory_points": int(stats["points"]),
            "memory_bytes": int(stats["bytes"]),
            "coverage_voxels": int(stats["coverage_voxels"]),
            "novelty": float(frame.novelty[index]),
            "collision": bool(frame.collision[index]),
            "new_voxels": int(frame.new_voxels[index]),
            **self.task.info(world),
        }


def user_frame(options: dict, height: int, width: int, fov_deg: float):
    """Validate a user's seed image (+ optional depth and dynamic mask), centre-crop it to
    the frame's aspect ratio (``options["image_fit"] = "stretch"`` resizes it whole
    instead, distorting it) and resize it; returns them and the horizontal FOV of what is
    kept (``fov_deg`` is the image's)."""
    image = np.ascontiguousarray(options["image"])  # any strides, negative ones included
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"options['image'] must be an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"options['image'] must be at least 8x8, got {image.shape[:2]}")
    fit = options.get("image_fit", "crop")
    if fit not in ("crop", "stretch"):
        raise ValueError(f"options['image_fit'] must be 'crop' (centre-crop to the frame's aspect ratio) or 'stretch', got {fit!r}")
    rows, cols = centre_crop(image.shape[:2], (height, width)) if fit == "crop" else (slice(None), slice(None))
    if fit == "crop":
        kept = cols.stop - cols.start
        fov_deg = float(np.degrees(2 * np.arctan(np.tan(np.radians(fov_deg) / 2) * kept / image.shape[1])))
    rgb = resize_image(np.ascontiguousarray(image[rows, cols]), height, width)
    depth = keep = None
    if options.get("depth") is not None:
        depth = np.ascontiguousarray(options["depth"])
        if depth.dtype.kind not in "iuf":
            raise ValueError(f"options['depth'] must be real-valued metres, got dtype {depth.dtype}")
        depth = depth.astype(np.float32)
        if depth.shape != image.shape[:2]:
            raise ValueError(f"options['depth'] must have shape {image.shape[:2]} like the image, got {depth.shape}")
        if np.isnan(depth).any() or (depth <= 0).any():
            raise ValueError("options['depth'] must be positive metres without NaN (inf for sky), got NaN or values <= 0")
        depth = resize_depth(depth[rows, cols], height, width)
    if options.get("dynamic_mask") is not None:
        mask = np.ascontiguousarray(options["dynamic_mask"])
        if mask.shape != image.shape[:2]:
            raise ValueError(f"options['dynamic_mask'] must have shape {image.shape[:2]} like the image, got {mask.shape}")
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise ValueError("options['dynamic_mask'] must be bool (True on moving objects) or hold only 0 and 1, "
                             f"got dtype {mask.dtype} with other values")
        keep = ~resize_mask(mask[rows, cols].astype(bool), height, width)
    return rgb, depth, keep, fov_deg


def centre_crop(shape: tuple[int, int], target: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the largest centred part of an image of ``shape`` (H, W) with
    the aspect ratio of ``target`` (H, W)."""
    h, w = shape
    if h * target[1] > w * target[0]:  # taller than the target: crop rows
        keep = max(1, round(w * target[0] / target[1]))
        top = (h - keep) // 2
        return slice(top, top + keep), slice(0, w)
    keep = max(1, round(h * target[1] / target[0]))
    left = (w - keep) // 2
    return slice(0, h), slice(left, left + keep)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_device(value) -> bool:
    try:
        torch.device(value)
    except (RuntimeError, TypeError):
        return False
    return True


def _device_available(value) -> bool:
    device = torch.device(value)
    if device.type == "cpu":
        return True
    backend = getattr(torch, device.type, None)
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)()
                and (device.index is None or device.index < backend.device_count()))


def check_arguments(**args) -> None:
    """Raise ``ValueError`` naming the first env argument that is not what it must be."""
    rules = {
        "width": (_is_integer, lambda v: v >= 64, "an int >= 64"),
        "height": (_is_integer, lambda v: v >= 64, "an int >= 64"),
        "frames_per_step": (_is_integer, lambda v: v >= 1, "an int >= 1"),
        "fov_deg": (_is_real, lambda v: 0 < v < 180, "a number in (0, 180) degrees"),
        "move_step": (_is_real, lambda v: v > 0, "a positive number of metres"),
        "turn_step_deg": (_is_real, lambda v: 0 < v <= 180, "a number in (0, 180] degrees"),
        "pitch_limit_deg": (_is_real, lambda v: 0 <= v < 90, "a number in [0, 90) degrees"),
        "max_depth": (_is_real, lambda v: v > 0, "a positive number of metres"),
        "reward_per_voxel": (_is_real, lambda v: True, "a finite number"),
        "collision_penalty": (_is_real, lambda v: True, "a finite number"),
        "dynamic_objects": (_is_integer, lambda v: v >= 0, "an int >= 0"),
        "memory": (lambda v: v in MEMORIES, lambda v: True, f"one of {sorted(MEMORIES)}"),
        "memory_capacity": (_is_integer, lambda v: v >= 1, "an int >= 1 or None", True),
        "max_episode_steps": (_is_integer, lambda v: v >= 1, "an int >= 1 or None", True),
        "use_memory": (lambda v: isinstance(v, (bool, np.bool_)), lambda v: True, "a bool"),
        "render_map": (lambda v: isinstance(v, (bool, np.bool_)), lambda v: True, "a bool"),
        "scene_kind": (lambda v: v in ("indoor", "outdoor"), lambda v: True, "'indoor', 'outdoor' or None", True),
        "device": (_is_device, _device_available, "'cpu' or a torch device this machine has (e.g. 'cuda:0')"),
        "dtype": (lambda v: v in ("float32", "bfloat16", "float16"), lambda v: True,
                  "'float32', 'bfloat16' or 'float16'"),
    }
    for name, value in args.items():
        kind, ok, expected, *optional = rules[name]
        if value is None and optional:
            continue
        if not (kind(value) and ok(value)):
            raise ValueError(f"{name} must be {expected}, got {value!r}")


def resize_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-sample a depth map (no averaging across depth edges or into sky)."""
    rows = ((np.arange(height) + 0.5) * depth.shape[0] / height).astype(int)
    cols = ((np.arange(width) + 0.5) * depth.shape[1] / width).astype(int)
    return depth[rows][:, cols]


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A pixel of the small mask is set if any source pixel under it is (conservative)."""
    rows = np.minimum((np.arange(height + 1) * mask.shape[0]) // height, mask.shape[0])
    cols = np.minimum((np.arange(width + 1) * mask.shape[1]) // width, mask.shape[1])
    cum = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = cum[rows[1:]][:, cols[1:]] - cum[rows[:-1]][:, cols[1:]] - cum[rows[1:]][:, cols[:-1]] + cum[rows[:-1]][:, cols[:-1]]
    return counts > 0
