"""The task layer over the world core: what an episode asks of the agent.

``task="explore"`` (default) pays for newly covered voxels and never terminates. The goal
tasks follow Habitat's conventions (PointNav, ImageNav: a STOP action, a success radius,
SPL, a shaped reward) with MiniWorld-style termination:

* ``imagenav``: at reset the world is seeded, a scripted tour walks from the start along
  the shortest path to a free point at a sampled geodesic distance, and the tour's last
  pose becomes the goal; its frame (generated and remembered by the world) is the goal
  image. The agent is put back at the start with the tour's memory kept. Observation
  ``Dict(rgb, goal)``. Success: within ``success_distance`` and ``success_angle_deg``
  (angle between the optical axes) of the goal pose.
* ``pointnav``: the goal is a free point at a sampled geodesic distance; observation
  ``Dict(rgb, pointgoal)``, ``pointgoal`` = (distance in metres, bearing in radians,
  positive = to the right) in the agent's frame, updated every step (Habitat's
  PointGoal-with-GPS+compass sensor). Success: within ``success_distance``.
* ``homing``: at reset a scripted outbound walk (the same tour) takes the agent away from
  the start; the goal is the start pose and the goal image the first frame. Observation
  ``Dict(rgb, goal)``. Success: within ``success_distance`` and ``success_angle_deg``.

Every goal task adds ``GoalAction.STOP`` (id 9; in continuous mode a 7th action
component > 0). STOP ends the episode (``terminated``); it is a success if the goal
criterion holds then (with ``auto_stop=True`` the episode also ends, as a success, as
soon as the criterion holds). ``truncated`` comes from the step limit as before.
``info`` gains ``success``, ``spl`` (success * shortest / max(shortest, path taken)),
``distance_to_goal`` (geodesic, metres), ``path_length`` and ``shortest_path_length``.
Reward (Habitat's): the decrease in geodesic distance to the goal, plus
``success_reward`` on success, plus ``slack_reward`` every step.

Free space, geodesic distances and shortest paths: :mod:`mirage_gym.navigation`. Goals are
drawn only among points the start reaches on that grid (and, for the tour tasks, a goal is
issued only if it is still reachable on the grid rebuilt from the memory after the tour);
otherwise they are resampled, up to ``max_attempts`` times.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from gymnasium import spaces

from mirage_gym import navigation as nav
from mirage_gym.geometry import Action

TASKS = ("explore", "imagenav", "pointnav", "homing")

GoalAction = enum.IntEnum("GoalAction", {**{a.name: int(a) for a in Action}, "STOP": len(Action)})
GoalAction.__doc__ = "The discrete actions of the goal tasks: the navigation set plus STOP (9)."
POINTGOAL_BOUND = 1e4  # metres


@dataclass
class TaskConfig:
    """Parameters of the goal tasks (``task_options`` of the env); distances in metres."""

    success_distance: float = 0.3
    success_angle_deg: float = 30.0  # imagenav and homing only
    success_reward: float = 2.5
    slack_reward: float = -0.01
    auto_stop: bool = False  # end (as a success) on arrival, without waiting for STOP
    goal_min_distance: float = 1.0  # geodesic distance of sampled goals from the start
    goal_max_distance: float = 4.0
    grid_cell: float = 0.1
    clearance: float = 0.3  # planner's clearance from geometry (the world blocks at 0.25)
    grid_radius: float = 8.0  # worlds from a user image: the grid spans +-this around the start
    max_attempts: int = 10

    def __post_init__(self):
        for name in ("success_distance", "grid_cell", "grid_radius", "goal_max_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"task_options[{name!r}] must be a positive number of metres, got {value!r}")
        for name in ("goal_min_distance", "clearance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"task_options[{name!r}] must be a non-negative number of metres, got {value!r}")
        if not self.goal_min_distance < self.goal_max_distance:
            raise ValueError(f"task_options['goal_min_distance'] ({self.goal_min_distance}) must be below "
                             f"'goal_max_distance' ({self.goal_max_distance})")
        if not (isinstance(self.success_angle_deg, (int, float)) and 0 < self.success_angle_deg <= 180):
            raise ValueError(f"task_options['success_angle_deg'] must be in (0, 180], got {self.success_angle_deg!r}")
        for name in ("success_reward", "slack_reward"):
            if not (isinstance(getattr(self, name), (int, float)) and math.isfinite(getattr(self, name))):
                raise ValueError(f"task_options[{name!r}] must be a finite number, got {getattr(self, name)!r}")
        if not isinstance(self.auto_stop, bool):
            raise ValueError(f"task_options['auto_stop'] must be a bool, got {self.auto_stop!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"task_options['max_attempts'] must be a positive integer, got {self.max_attempts!r}")

    @classmethod
    def from_options(cls, options: dict | None) -> TaskConfig:
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown task_options {unknown}; expected some of {sorted(known)}")
        return cls(**options)


def make_task(name: str, options: dict | None, adapter):
    """The task object for ``name`` (one of :data:`TASKS`) over a ``EnvAdapter``."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {name!r}")
    if name == "explore":
        if options:
            raise ValueError(f"task_options apply to the goal tasks, not to 'explore'; got {sorted(options)}")
        return ExploreTask(adapter)
    return {"imagenav": ImageNavTask, "pointnav": PointNavTask, "homing": HomingTask}[name](adapter, TaskConfig.from_options(options))


class ExploreTask:
    """Coverage: the adapter's explore reward, no termination, spaces unchanged."""

    name = "explore"

    def __init__(self, adapter):
        self.adapter = adapter

    def action_space(self, base: spaces.Space) -> spaces.Space:
        return base

    def observation_space(self, base: spaces.Space) -> spaces.Space:
        return base

    def reset(self, index: int, frame, np_random: np.random.Generator, scene):
        return frame

    def motion(self, action) -> tuple[np.ndarray, bool]:
        return self.adapter.action_to_motion(action), False

    def outcome(self, index: int, frame, stop: bool) -> tuple[float, bool]:
        return self.adapter.reward(frame, index), False

    def observation(self, index: int, obs):
        return obs

    def info(self, index: int) -> dict:
        return {}

    def snapshot(self, index: int) -> tuple[dict, dict]:
        return {}, {"name": self.name}

    def load_state(self, tensors: dict, meta: dict | None):
        check_task_name(meta, self.name)

    def set_state(self, index: int, state) -> None:
        pass


def check_task_name(meta: dict | None, name: str) -> None:
    saved = "explore" if meta is None else meta.get("name")
    if saved != name:
        raise ValueError(f"snapshot was made with task {saved!r}, this env runs task {name!r}")


@dataclass
class Episode:
    """One world's goal episode: the goal, the grids it is measured on, and the progress."""

    goal_xyz: np.ndarray  # (3,)
    goal_pose: np.ndarray  # (4, 4)
    goal_image: np.ndarray | None  # (H, W, 3) uint8
    layout: nav.OccupancyGrid  # free space of the scene's layout alone
    grid: nav.OccupancyGrid  # layout + memory at the episode's start: distances are measured on it
    field: np.ndarray  # geodesic distance to the goal of every cell of ``grid``
    shortest: float  # any-angle shortest-path length from the start
    distance: float  # geodesic distance to the goal now
    position: np.ndarray  # (3,)
    pose: np.ndarray  # (4, 4)
    path_length: float = 0.0
    success: bool = False
    stopped: bool = False
    replan: bool = False  # the oracle's plan needs the memory since (a move was blocked)
    plan: tuple | None = field(default=None, repr=False)  # the oracle's (grid, field) if replanned

    @property
    def goal_xz(self) -> np.ndarray:
        return self.goal_xyz[[0, 2]]


class GoalTask:
    """Shared machinery of the goal tasks; subclasses choose the goal (:meth:`new_episode`)."""

    name = "goal"
    uses_angle = True
    goal_sensor = "goal"  # "goal" (an image) or "pointgoal"

    def __init__(self, adapter, config: TaskConfig):
        self.adapter = adapter
        self.config = config
        self.episodes: list[Episode | None] = [None] * adapter.world.num_worlds

    # ------------------------------------------------------------------ spaces

    def action_space(self, base: spaces.Space) -> spaces.Space:
        if isinstance(base, spaces.Discrete):
            return spaces.Discrete(len(GoalAction))
        return spaces.Box(-1.0, 1.0, (7,), np.float32)

    def observation_space(self, base: spaces.Space) -> spaces.Space:
        parts = dict(base.spaces) if isinstance(base, spaces.Dict) else {"rgb": base}
        c = self.adapter.world.config
        if self.goal_sensor == "goal":
            parts["goal"] = spaces.Box(0, 255, (c.height, c.width, 3), np.uint8)
        else:
            parts["pointgoal"] = spaces.Box(np.array([0.0, -math.pi], np.float32),
                                            np.array([POINTGOAL_BOUND, math.pi], np.float32), (2,), np.float32)
        return spaces.Dict(parts)

    # ------------------------------------------------------------------ actions

    def motion(self, action) -> tuple[np.ndarray, bool]:
        """The unit motion of ``action`` and whether it is STOP (precise errors)."""
        if self.adapter.action_mode == "discrete":
            a = np.asarray(action)
            if a.shape != () or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a) <= int(GoalAction.STOP):
                raise ValueError(f"action must be an integer in [0, {int(GoalAction.STOP)}] ({int(GoalAction.STOP)} = STOP), "
                                 f"got {action!r}")
            if int(a) == GoalAction.STOP:
                return np.zeros(6), True
            return self.adapter.action_to_motion(a), False
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise ValueError(f"action must have shape (7,) (6 motion components and STOP > 0), got {a.shape}")
        if not (np.isfinite(a[6]) and abs(a[6]) <= 1.0 + 1e-6):
            raise ValueError(f"action[6] (STOP when > 0) must lie in [-1, 1], got {a[6]}")
        motion = self.adapter.action_to_motion(a[:6])
        return (np.zeros(6), True) if a[6] > 0 else (motion, False)

    # ------------------------------------------------------------------ episodes

    def reset(self, index: int, frame, np_random: np.random.Generator, scene):
        """Choose a reachable goal for world ``index`` (just reset, showing ``frame``);
        returns the frame the agent starts from."""
        cfg = self.config
        world = self.adapter.world
        start = frame.pose[0][:3, 3]
        if scene is not None:
            (x0, x1), (z0, z1) = scene.bounds
            bounds = ((x0 - 0.5, x1 + 0.5), (z0 - 0.5, z1 + 0.5))
        else:
            r = cfg.grid_radius
            bounds = ((start[0] - r, start[0] + r), (start[2] - r, start[2] + r))
        layout = nav.build_grid(bounds, cfg.grid_cell, cfg.clearance, scene)
        tensors, meta = world.snapshot(index)
        seed_state = ({k: v.clone() for k, v in tensors.items()}, meta)  # a snapshot may view the world's arrays
        for _ in range(cfg.max_attempts):
            made = self.new_episode(index, frame, np_random, layout, seed_state)
            if made is not None:
                episode, start_frame = made
                self.episodes[index] = episode
                return start_frame
            world.restore(index, *seed_state)
        raise RuntimeError(f"{self.name}: no reachable goal found in {cfg.max_attempts} attempts (goal distance "
                           f"{cfg.goal_min_distance}-{cfg.goal_max_distance} m); lower task_options['goal_min_distance'] "
                           f"or raise 'max_attempts'")

    def new_episode(self, index, frame, np_random, layout, seed_state):
        """An (Episode, start frame) for world ``index``, or None to try again."""
        raise NotImplementedError

    def grid_now(self, index: int, layout: nav.OccupancyGrid, clearance: float | None = None) -> nav.OccupancyGrid:
        """``layout`` with the geometry world ``index`` remembers now blocked (within
        ``clearance``, default the task's)."""
        points = self.adapter.world.memory.points(index).detach().cpu().numpy()
        return nav.block_points(layout, points, self.config.clearance if clearance is None else clearance)

    def measured_episode(self, layout, grid, goal_pose, goal_image, start_pose) -> Episode | None:
        """The episode to ``goal_pose`` from ``start_pose`` measured on ``grid``; None if
        the goal is unreachable or already within twice the success distance."""
        goal_xyz = goal_pose[:3, 3].copy()
        start = start_pose[:3, 3].copy()
        field = nav.distance_field(grid, goal_xyz[[0, 2]], reach=self.config.clearance)
        distance = nav.geodesic(grid, field, start[[0, 2]], goal_xyz[[0, 2]], reach=self.config.clearance)
        if not math.isfinite(distance) or distance <= 2 * self.config.success_distance:
            return None
        path = nav.shortest_path(grid, field, start[[0, 2]], goal_xyz[[0, 2]])
        return Episode(goal_xyz=goal_xyz, goal_pose=goal_pose.copy(), goal_image=goal_image, layout=layout, grid=grid,
                       field=field, shortest=nav.path_length(path), distance=distance, position=start,
                       pose=start_pose.copy())

    # ------------------------------------------------------------------ steps

    def outcome(self, index: int, frame, stop: bool) -> tuple[float, bool]:
        """Update world ``index``'s episode with row ``index`` of ``frame``; (reward, terminated)."""
        cfg = self.config
        ep = self.episodes[index]
        pose = frame.pose[index]
        position = pose[:3, 3].copy()
        ep.path_length += float(np.linalg.norm(position - ep.position))
        ep.position, ep.pose = position, pose.copy()
        ep.replan |= bool(frame.collision[index])
        distance = self.distance_to_goal(ep, position)
        reached = self.reached(ep, pose)
        ep.stopped = bool(stop or (cfg.auto_stop and reached))
        ep.success = bool(ep.stopped and reached)
        progress = ep.distance - distance if math.isfinite(distance) and math.isfinite(ep.distance) else 0.0
        ep.distance = distance
        reward = progress + cfg.slack_reward + (cfg.success_reward if ep.success else 0.0)
        return float(reward), ep.stopped

    def distance_to_goal(self, ep: Episode, position: np.ndarray) -> float:
        return nav.geodesic(ep.grid, ep.field, position[[0, 2]], ep.goal_xz, reach=self.config.clearance)

    def reached(self, ep: Episode, pose: np.ndarray) -> bool:
        if np.linalg.norm(pose[:3, 3] - ep.goal_xyz) > self.config.success_distance:
            return False
        return not self.uses_angle or view_angle_deg(pose, ep.goal_pose) <= self.config.success_angle_deg

    def spl(self, ep: Episode) -> float:
        if not ep.success:
            return 0.0
        return spl(True, ep.shortest, ep.path_length)

    def observation(self, index: int, obs):
        obs = dict(obs) if isinstance(obs, dict) else {"rgb": obs}
        ep = self.episodes[index]
        if self.goal_sensor == "goal":
            obs["goal"] = ep.goal_image.copy()
        else:
            obs["pointgoal"] = pointgoal(ep.pose, ep.goal_xyz)
        return obs

    def info(self, index: int) -> dict:
        ep = self.episodes[index]
        return {
            "success": bool(ep.success),
            "spl": float(self.spl(ep)),
            "distance_to_goal": float(ep.distance),
            "path_length": float(ep.path_length),
            "shortest_path_length": float(ep.shortest),
        }

    # ------------------------------------------------------------------ the oracle

    def oracle_action(self, index: int) -> GoalAction:
        """The shortest-path follower's next action in world ``index`` (Habitat's
        ``ShortestPathFollower``): walk the any-angle shortest path, turn to the goal's
        heading where the task asks for one, then STOP. After a blocked move it replans on
        the grid with the memory since (the world may have generated new geometry)."""
        ep = self.episodes[index]
        world = self.adapter.world
        if ep.replan:
            grid = self.grid_now(index, ep.layout, world.config.clearance)  # the world's own rule, no margin
            ep.plan = (grid, nav.distance_field(grid, ep.goal_xz, reach=self.config.clearance))
            ep.replan = False
        state = world.states[index]
        rig = world.config.rig
        if not arrived(state, ep.goal_xz, min(0.15, 0.5 * self.config.success_distance)):
            # the freshest plan first; a blocked move can leave the eye inside its margin, so
            # reach farther for a free cell, then fall back on the episode's grid, then turn
            plans = [ep.plan] if ep.plan is not None else []
            for grid, field in plans + [(ep.grid, ep.field)]:
                for reach in (self.config.clearance, 2 * self.config.clearance):
                    action = steer(state, grid, field, ep.goal_xz, rig, reach=reach)
                    if action is not None:
                        return action
            return GoalAction.TURN_RIGHT
        if self.uses_angle:
            pitch = state[4]
            if abs(pitch) > math.radians(rig.pitch_step_deg) / 2:
                return GoalAction.LOOK_DOWN if pitch > 0 else GoalAction.LOOK_UP
            goal_yaw = math.atan2(ep.goal_pose[0, 2], ep.goal_pose[2, 2])
            error = nav.wrap_angle(goal_yaw - state[3])
            if abs(error) > math.radians(rig.turn_step_deg) / 2:
                return GoalAction.TURN_RIGHT if error > 0 else GoalAction.TURN_LEFT
        return GoalAction.STOP

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, index: int) -> tuple[dict, dict]:
        ep = self.episodes[index]
        tensors = {
            "task.goal_pose": torch.as_tensor(ep.goal_pose),
            "task.layout": torch.as_tensor(ep.layout.free),
            "task.grid": torch.as_tensor(ep.grid.free),
            "task.field": torch.as_tensor(ep.field),
            "task.position": torch.as_tensor(ep.position),
            "task.pose": torch.as_tensor(ep.pose),
        }
        if ep.goal_image is not None:
            tensors["task.goal_image"] = torch.as_tensor(ep.goal_image)
        meta = {
            "name": self.name,
            "grid": [ep.grid.x0, ep.grid.z0, ep.grid.cell],
            "shortest": ep.shortest,
            "distance": ep.distance,
            "path_length": ep.path_length,
            "success": ep.success,
            "stopped": ep.stopped,
            "config": asdict(self.config),
        }
        return tensors, meta

    def load_state(self, tensors: dict, meta: dict | None) -> Episode:
        """The episode a snapshot holds, fully validated (raises ``ValueError``/``KeyError``)."""
        check_task_name(meta, self.name)
        if meta["config"] != asdict(self.config):
            raise ValueError("snapshot was made with other task_options")
        x0, z0, cell = (float(v) for v in meta["grid"])
        free = tensors["task.grid"].numpy().astype(bool)
        layout = tensors["task.layout"].numpy().astype(bool)
        field = tensors["task.field"].numpy().astype(np.float64)
        if free.ndim != 2 or layout.shape != free.shape or field.shape != free.shape:
            raise ValueError(f"snapshot task grids disagree: {layout.shape}, {free.shape}, {field.shape}")
        c = self.adapter.world.config
        image = tensors.get("task.goal_image")
        if (image is None) != (self.goal_sensor != "goal"):
            raise ValueError("snapshot task goal image missing or unexpected")
        if image is not None and tuple(image.shape) != (c.height, c.width, 3):
            raise ValueError(f"snapshot task goal image must be ({c.height}, {c.width}, 3), got {tuple(image.shape)}")
        shapes = {"task.goal_pose": (4, 4), "task.position": (3,), "task.pose": (4, 4)}
        for name, shape in shapes.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"snapshot tensor {name!r} must have shape {shape}, got {tuple(tensors[name].shape)}")
        return Episode(
            goal_xyz=tensors["task.goal_pose"].numpy()[:3, 3].copy(),
            goal_pose=tensors["task.goal_pose"].numpy().copy(),
            goal_image=None if image is None else image.numpy().astype(np.uint8).copy(),
            layout=nav.OccupancyGrid(x0, z0, cell, layout),
            grid=nav.OccupancyGrid(x0, z0, cell, free),
            field=field,
            shortest=float(meta["shortest"]),
            distance=float(meta["distance"]),
            position=tensors["task.position"].numpy().copy(),
            pose=tensors["task.pose"].numpy().copy(),
            path_length=float(meta["path_length"]),
            success=bool(meta["success"]),
            stopped=bool(meta["stopped"]),
        )

    def set_state(self, index: int, state: Episode) -> None:
        self.episodes[index] = state


class PointNavTask(GoalTask):
    """Go to a point given as (distance, bearing) in the agent's frame."""

    name = "pointnav"
    uses_angle = False
    goal_sensor = "pointgoal"

    def new_episode(self, index, frame, np_random, layout, seed_state):
        cfg = self.config
        start_pose = frame.pose[0]
        grid = self.grid_now(index, layout)
        goal = nav.sample_goal(grid, start_pose[[0, 2], 3], np_random, cfg.goal_min_distance, cfg.goal_max_distance)
        if goal is None:
            return None
        goal_pose = np.eye(4)
        goal_pose[[0, 2], 3] = goal
        episode = self.measured_episode(layout, grid, goal_pose, None, start_pose)
        return None if episode is None else (episode, frame)


class TourTask(GoalTask):
    """Goal tasks that first walk the world along a scripted tour (see :meth:`tour`)."""

    def tour(self, index, frame, np_random, layout):
        """Walk world ``index`` from its start along the shortest path to a free point at a
        sampled geodesic distance (the world generates and remembers every view). Returns
        the last frame, or None if no such point exists."""
        cfg = self.config
        world = self.adapter.world
        grid = self.grid_now(index, layout)
        target = nav.sample_goal(grid, frame.pose[0][[0, 2], 3], np_random, cfg.goal_min_distance, cfg.goal_max_distance)
        if target is None:
            return None
        field = nav.distance_field(grid, target, reach=cfg.clearance)
        rig = world.config.rig
        limit = int(3 * cfg.goal_max_distance / rig.move_step + 360 / rig.turn_step_deg)
        scratch = type(world)(world.backend, world.config, num_worlds=1, device=world.device)
        scratch.restore(0, *world.snapshot(index))
        last = None
        for _ in range(limit):
            state = scratch.states[0]
            action = None if arrived(state, target, rig.move_step / 2) else steer(state, grid, field, target, rig)
            if action is None:
                break
            last = scratch.step(self.adapter.action_to_motion(int(action))[None])
        if last is None:
            return None
        world.restore(index, *scratch.snapshot(0))
        return last


class ImageNavTask(TourTask):
    """Find again the view a tour showed: the goal image is a frame the world generated."""

    name = "imagenav"

    def new_episode(self, index, frame, np_random, layout, seed_state):
        last = self.tour(index, frame, np_random, layout)
        if last is None:
            return None
        # back to the start, keeping the tour's memory (and noise stream): the start's own
        # state (pose, context frames, depth, decoder stream) comes from the seed
        toured, _ = self.adapter.world.snapshot(index)
        seed_tensors, seed_meta = seed_state
        tensors = {k: v for k, v in seed_tensors.items() if not k.startswith("memory.")}
        tensors.update({k: v for k, v in toured.items() if k.startswith("memory.") or k in ("rng", "coverage")})
        self.adapter.world.restore(index, tensors, seed_meta)
        grid = self.grid_now(index, layout)
        episode = self.measured_episode(layout, grid, last.pose[0], last.rgb[0].copy(), frame.pose[0])
        return None if episode is None else (episode, frame)


class HomingTask(TourTask):
    """Come back to the start after a scripted outbound walk; the goal image is the first view."""

    name = "homing"

    def new_episode(self, index, frame, np_random, layout, seed_state):
        last = self.tour(index, frame, np_random, layout)
        if last is None:
            return None
        grid = self.grid_now(index, layout)
        episode = self.measured_episode(layout, grid, frame.pose[0], frame.rgb[0].copy(), last.pose[0])
        return None if episode is None else (episode, last)


# --------------------------------------------------------------------------- helpers


def arrived(state: np.ndarray, goal_xz, within: float) -> bool:
    return bool(np.hypot(goal_xz[0] - state[0], goal_xz[1] - state[2]) <= within)


def steer(state: np.ndarray, grid: nav.OccupancyGrid, field: np.ndarray, goal_xz, rig, reach: float | None = None):
    """The discrete action that follows the any-angle shortest path from rig ``state`` to
    ``goal_xz`` (turn toward the next corner until within half a turn step, then walk);
    None if the goal cannot be reached from a free cell within ``reach`` of the eye."""
    position = np.array([state[0], state[2]])
    goal = np.asarray(goal_xz, dtype=np.float64)
    path = nav.shortest_path(grid, field, position, goal, reach=reach)
    if len(path) < 2:
        return None
    corner = next((p for p in path[1:] if np.linalg.norm(p - position) > 1e-6), goal)
    error = nav.heading_to(state, corner)
    if abs(error) > math.radians(rig.turn_step_deg) / 2:
        return GoalAction.TURN_RIGHT if error > 0 else GoalAction.TURN_LEFT
    return GoalAction.MOVE_FORWARD


def spl(success: bool, shortest: float, taken: float) -> float:
    """Success weighted by path length (Anderson et al. 2018): ``success * shortest /
    max(shortest, taken)``."""
    if not success:
        return 0.0
    if shortest <= 0:
        return 1.0
    return float(shortest / max(shortest, taken))


def view_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (degrees) between the optical axes of camera poses ``a`` and ``b``."""
    cos = float(np.clip(np.dot(a[:3, 2], b[:3, 2]), -1.0, 1.0))
    return math.degrees(math.acos(cos))


def pointgoal(pose: np.ndarray, goal_xyz: np.ndarray) -> np.ndarray:
    """(distance, bearing) of ``goal_xyz`` on the walking plane from camera ``pose``;
    bearing in radians, positive to the right, 0 straight ahead (Habitat's PointGoal with
    GPS and compass, in this project's right-turning yaw)."""
    d = goal_xyz - pose[:3, 3]
    forward = pose[:3, 2].copy()
    forward[1] = 0.0
    if np.linalg.norm(forward) < 1e-9:  # looking straight up or down: the heading is the up vector's
        forward = -pose[:3, 1] * np.sign(pose[1, 2])
        forward[1] = 0.0
    forward /= np.linalg.norm(forward)
    right = np.array([forward[2], 0.0, -forward[0]])
    rho = float(np.hypot(d[0], d[2]))
    phi = math.atan2(float(d @ right), float(d @ forward)) if rho > 1e-9 else 0.0
    return np.array([min(rho, POINTGOAL_BOUND), phi], dtype=np.float32)
