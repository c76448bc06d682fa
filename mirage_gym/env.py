"""``MirageWorldEnv``: the Gymnasium adapter over the world core."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from mirage_gym.geometry import Action, RigConfig, discrete_to_continuous
from mirage_gym.memory import static_keep_mask
from mirage_gym.world import World, WorldConfig, WorldFrame, resize_image

ACTION_MODES = ("discrete", "continuous")
OBS_MODES = ("rgb", "rgbd", "dict")
POSE_BOUND = 1e4  # metres: finite bounds keep the checkers and normalising wrappers happy


def load_backend(model, addon=None, depth_model=None, device="cpu", dtype="float32"):
    """A world model from ``"tiny"`` (the shipped weights), a local directory (the tiny
    layout, or a diffusers Wan2.2-TI2V layout with ``addon`` and ``depth_model``), or an
    object that already implements the backend protocol (for tests and custom models).

    Loaded models are shared between the envs of a process: a backend holds weights only
    (every world's state lives in its :class:`~mirage_gym.world.World`)."""
    if not isinstance(model, (str, Path)):
        if addon is not None or depth_model is not None:
            raise ValueError("addon and depth_model apply to a model directory, not to a backend object")
        return model

    def key(path):
        return None if path is None else str(Path(path).resolve())

    return _cached_backend("tiny" if str(model) == "tiny" else key(model), key(addon), key(depth_model),
                           str(torch.device(device)), str(dtype).removeprefix("torch."))


@functools.lru_cache(maxsize=4)
def _cached_backend(model: str, addon: str | None, depth_model: str | None, device: str, dtype: str):
    from mirage_gym.models.backend import load_backend as _load

    return _load(model, device=device, addon=addon, depth_model=depth_model, dtype=dtype)


class MirageWorldEnv(gym.Env):
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
    pitch_limit_deg=60, memory_capacity=262144, use_memory=True, frames_per_step=1,
    max_episode_steps=None, scene_kind=None, dynamic_objects=0, render_map=False,
    task="explore", task_options=None)``. ``task`` is ``"explore"``, ``"imagenav"``,
    ``"pointnav"`` or ``"homing"``; ``task_options`` sets the goal tasks'
    :class:`~mirage_gym.tasks.TaskConfig` (success radius and angle, rewards, goal distances).
    ``model`` is ``"tiny"`` (shipped weights) or a local model directory: the tiny layout, or
    a diffusers Wan2.2-TI2V-5B directory, which also takes ``addon`` (a trained Mirage
    add-on directory; without it the add-on is zero and the generator is the base model),
    ``depth_model`` (a local metric depth-estimation directory, required), ``dtype``
    (``"float32"`` or ``"bfloat16"``); ``device`` places the model and
    the memory (``"cpu"`` default). A Wan step yields 4 video frames: the observation is
    the last, ``env.unwrapped.step_frames`` holds all of them. ``use_memory=False``
    hides memory from the generator (the ablation). ``info`` holds fresh numpy copies of
    ``pose``, ``intrinsics``, memory stats, ``novelty`` and ``collision``.

    ## Vectorized environment
    ``gym.make_vec("MirageWorld-v0", num_envs=N, vectorization_mode="vector_entry_point")``
    gives :class:`~mirage_gym.vector_env.MirageWorldVectorEnv`: one generator forward for
    all N worlds.

    ## Version History
    * v0: initial release; goal tasks (``MirageImageNav-v0``, ``MiragePointNav-v0``,
      ``MirageHoming-v0``) added as presets of the same env.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 8}

    def __init__(self, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.core = WorldAdapter(num_worlds=1, **kwargs)
        self.action_space = self.core.single_action_space
        self.observation_space = self.core.single_observation_space
        self._frame = None
        self._path: list[np.ndarray] = []
        self._elapsed = 0
        self._window = None

    @property
    def world(self) -> World:
        return self.core.world

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        frame = self.core.reset_world(0, self.np_random, options or {})
        self._elapsed = 0
        self._path = [frame.pose[0][:3, 3].copy()]
        self._frame = frame
        return self.core.observation(frame, 0), self.core.info(frame, 0)

    @property
    def step_frames(self) -> np.ndarray | None:
        """Every frame the last reset or step generated, (T, H, W, 3) uint8, the observation
        last (T = 4 per step for Wan2.2, ``frames_per_step`` for the tiny model)."""
        return None if self._frame is None or self._frame.frames is None else self._frame.frames[0].copy()

    def step(self, action):
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        motion, stop = self.core.task.motion(action)
        frame = self.world.step(motion[None])
        reward, terminated = self.core.task.outcome(0, frame, stop)
        self._elapsed += 1
        self._frame = frame
        self._path.append(frame.pose[0][:3, 3].copy())
        limit = self.core.max_episode_steps  # None under gym.make: TimeLimit truncates
        truncated = limit is not None and self._elapsed >= limit
        if self.render_mode == "human":
            self.render()
        return self.core.observation(frame, 0), reward, terminated, bool(truncated), self.core.info(frame, 0)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self._frame is None:
            return None
        image = self._frame.rgb[0]
        if self.core.render_map:
            from mirage_gym.render import with_map

            image = with_map(image, self.world.memories[0], np.asarray(self._path), self._frame.pose[0])
        if self.render_mode == "rgb_array":
            return image.copy()
        from mirage_gym.render import show

        self._window = show(self._window, image, self.metadata["render_fps"])
        return None

    def close(self):
        if self._window is not None:
            from mirage_gym.render import close_window

            close_window(self._window)
            self._window = None

    def save_snapshot(self, path) -> None:
        """Save the whole episode (world, memory, RNGs, step count) to ``path`` atomically."""
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before save_snapshot()")
        from mirage_gym.snapshot import save_snapshot

        tensors, meta = self.world.snapshot(0)
        tensors["path"] = torch.as_tensor(np.asarray(self._path))
        tensors["frame.rgb"] = torch.as_tensor(self._frame.rgb[0])
        task_tensors, meta["task"] = self.core.task.snapshot(0)
        tensors.update(task_tensors)
        meta["env"] = {
            "elapsed": self._elapsed,
            "np_random": self.np_random.bit_generator.state,
            "novelty": float(self._frame.novelty[0]),
            "collision": bool(self._frame.collision[0]),
        }
        save_snapshot(path, tensors, meta)

    def load_snapshot(self, path):
        """Continue from a snapshot; returns ``(observation, info)`` as at the save.

        Raises ``SnapshotError`` (a ``ValueError``) for a missing, corrupt, truncated or
        incompatible file; the env is left as it was.
        """
        from mirage_gym.snapshot import SnapshotError, load_snapshot

        tensors, meta = load_snapshot(path)
        try:
            env_meta = meta["env"]
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = env_meta["np_random"]
            frame_rgb = tensors["frame.rgb"].numpy()
            path_xyz = tensors["path"].numpy()
            task_state = self.core.task.load_state(tensors, meta.get("task"))
            self.world.restore(0, tensors, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"snapshot {path} does not fit this env: {exc}") from exc
        self._np_random = rng
        self.core.task.set_state(0, task_state)
        self._elapsed = int(env_meta["elapsed"])
        self._path = list(path_xyz)
        self._frame = WorldFrame(
            rgb=frame_rgb[None].copy(),
            depth=self.world.depth[0][None].copy(),
            pose=self.world.poses[0][None],
            novelty=np.array([env_meta["novelty"]]),
            new_voxels=np.zeros(1, dtype=np.int64),
            collision=np.array([env_meta["collision"]]),
        )
        return self.core.observation(self._frame, 0), self.core.info(self._frame, 0)

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


class WorldAdapter:
    """Everything the single and the vector env share: arguments, spaces, the batched
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
        move_step: float = 0.2,
        turn_step_deg: float = 15.0,
        pitch_limit_deg: float = 60.0,
        memory_capacity: int | None = 262_144,
        use_memory: bool = True,
        frames_per_step: int = 1,
        max_episode_steps: int | None = None,
        scene_kind: str | None = None,
        dynamic_objects: int = 0,
        render_map: bool = False,
        reward_per_voxel: float = 0.05,
        collision_penalty: float = -0.1,
        max_depth: float = 20.0,
        task: str = "explore",
        task_options: dict | None = None,
    ):
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if width < 64 or height < 64:
            raise ValueError(f"width and height must be at least 64, got {width}x{height}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be positive or None, got {max_episode_steps}")
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
            memory_capacity=memory_capacity,
            frames_per_step=frames_per_step,
        )
        backend = load_backend(model, addon=addon, depth_model=depth_model, device=device, dtype=dtype)
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

    def reset_world(self, index: int, np_random: np.random.Generator, options: dict):
        """Start world ``index`` from the options' image or the procedural scene of ``np_random``."""
        self.scene = None  # initial_frame keeps the procedural scene it renders, for the task
        rgb, depth, keep, fov = self.initial_frame(options, np_random)
        noise_seed = int(np_random.integers(2**31))
        frame = self.world.reset(index, rgb, depth, keep, fov_deg=fov, seed=noise_seed, prompt=options.get("prompt"))
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
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (6,):
            raise ValueError(f"action must have shape (6,), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        if np.any(np.abs(a) > 1.0 + 1e-6):
            raise ValueError(f"action components must lie in [-1, 1], got {a}")
        return a

    def initial_frame(self, options: dict, np_random: np.random.Generator):
        """The seed frame: the user's image (resized) or the procedural scene of the seed."""
        known = {"image", "depth", "dynamic_mask", "fov_deg", "scene_seed", "prompt"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected some of {sorted(known)}")
        c = self.world.config
        fov = options.get("fov_deg", c.fov_deg)
        if not (isinstance(fov, (int, float)) and 0 < fov < 180):
            raise ValueError(f"options['fov_deg'] must be a number in (0, 180), got {fov!r}")
        if "image" in options:
            return user_frame(options, c.height, c.width) + (float(fov),)
        if "depth" in options or "dynamic_mask" in options:
            raise ValueError("options 'depth' and 'dynamic_mask' need options['image']")
        from mirage_gym.scenes import make_scene

        scene_seed = options.get("scene_seed", int(np_random.integers(10_000)))
        scene = make_scene(int(scene_seed), kind=self.scene_kind, dynamic_objects=self.dynamic_objects)
        self.scene = scene
        r = scene.render(np.eye(4), c.width, c.height, fov_deg=float(fov))
        keep = static_keep_mask(r.depth, r.labels, far=c.far).numpy()
        return r.rgb, r.depth, keep, float(fov)

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


def user_frame(options: dict, height: int, width: int):
    """Validate and resize a user's seed image (+ optional depth and dynamic mask)."""
    image = np.asarray(options["image"])
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"options['image'] must be an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"options['image'] must be at least 8x8, got {image.shape[:2]}")
    rgb = resize_image(image, height, width)
    depth = keep = None
    if options.get("depth") is not None:
        depth = np.asarray(options["depth"], dtype=np.float32)
        if depth.shape != image.shape[:2]:
            raise ValueError(f"options['depth'] must have shape {image.shape[:2]} like the image, got {depth.shape}")
        if np.isnan(depth).any() or (depth < 0).any():
            raise ValueError("options['depth'] must be non-negative metres without NaN (inf for sky)")
        depth = resize_depth(depth, height, width)
    if options.get("dynamic_mask") is not None:
        mask = np.asarray(options["dynamic_mask"])
        if mask.shape != image.shape[:2]:
            raise ValueError(f"options['dynamic_mask'] must have shape {image.shape[:2]} like the image, got {mask.shape}")
        keep = ~resize_mask(mask.astype(bool), height, width)
    return rgb, depth, keep


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
