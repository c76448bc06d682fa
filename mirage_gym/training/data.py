"""Training data made on the spot: camera trajectories through procedural scenes.

Each sequence starts at a scene's reset pose (as an episode does) or at a random free pose,
then follows one of a few motion programs that an agent produces: walks, turns in place,
look-arounds, and out-and-back loops that revisit what was seen (so the generator learns
to copy memory where it exists and to invent where it does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mirage_gym.geometry import Action, RigConfig, apply_motion, discrete_to_continuous, pose_from_state
from mirage_gym.scenes import LABEL_STATIC, make_scene

PROGRAMS = ("walk", "turn", "look", "out_and_back", "turn_and_back")


@dataclass
class Sequences:
    """N rendered trajectories of T frames each (numpy)."""

    rgb: np.ndarray  # (N, T, H, W, 3) uint8
    depth: np.ndarray  # (N, T, H, W) float32, inf for sky
    static: np.ndarray  # (N, T, H, W) bool, pixels safe to remember
    states: np.ndarray  # (N, T, 6) rig states (x, y, z, yaw, pitch, roll)

    def __len__(self) -> int:
        return len(self.rgb)


def _program_actions(rng: np.random.Generator, program: str, length: int) -> list[int]:
    """Discrete actions for ``length - 1`` steps of one motion program."""
    n = length - 1
    turn = [Action.TURN_LEFT, Action.TURN_RIGHT][rng.integers(2)]
    back = Action.TURN_RIGHT if turn == Action.TURN_LEFT else Action.TURN_LEFT
    if program == "turn":
        return [turn] * n
    if program == "turn_and_back":
        k = int(rng.integers(min(2, n // 2), n // 2 + 1))
        return ([turn] * k + [back] * k + [turn] * n)[:n]
    if program == "out_and_back":
        k = int(rng.integers(min(2, n // 2), n // 2 + 1))
        go = [Action.MOVE_FORWARD, Action.STRAFE_LEFT, Action.STRAFE_RIGHT][rng.choice(3, p=[0.7, 0.15, 0.15])]
        ret = {Action.MOVE_FORWARD: Action.MOVE_BACKWARD, Action.STRAFE_LEFT: Action.STRAFE_RIGHT,
               Action.STRAFE_RIGHT: Action.STRAFE_LEFT}[go]
        return ([go] * k + [ret] * k + [go] * n)[:n]
    if program == "look":
        choices = [Action.TURN_LEFT, Action.TURN_RIGHT, Action.LOOK_UP, Action.LOOK_DOWN, Action.NOOP]
        return list(rng.choice(choices, size=n, p=[0.3, 0.3, 0.15, 0.15, 0.1]))
    choices = list(Action)
    p = np.array([0.4, 0.08, 0.08, 0.08, 0.14, 0.14, 0.03, 0.03, 0.02])
    return list(rng.choice(choices, size=n, p=p / p.sum()))


def render_sequences(
    seeds, length: int = 16, size: int = 64, rig: RigConfig = RigConfig(), seed: int = 0, progress: bool = True,
    height: int | None = None,
) -> Sequences:
    """One trajectory per scene seed in ``seeds``, rendered ``size`` wide and ``height``
    (default ``size``) high."""
    rng = np.random.default_rng(seed)
    rgb, depth, static, states = [], [], [], []
    for scene_seed in tqdm(list(seeds), desc="rendering sequences", disable=not progress):
        scene = make_scene(int(scene_seed), dynamic_objects=int(rng.random() < 0.3) * int(rng.integers(1, 3)))
        if rng.random() < 0.5:
            state = np.zeros(6)
        else:
            pose = scene.sample_free_pose(rng)
            yaw = np.arctan2(pose[0, 2], pose[2, 2])
            state = np.array([*pose[:3, 3], yaw, 0.0, 0.0])
        program = PROGRAMS[rng.integers(len(PROGRAMS))]
        seq_states = [state]
        for action in _program_actions(rng, program, length):
            nxt = apply_motion(seq_states[-1], discrete_to_continuous(int(action)), rig)
            if not scene.is_free(nxt[:3], 0.3)[0]:  # blocked: turn instead, as an agent would
                nxt = apply_motion(seq_states[-1], discrete_to_continuous(int(Action.TURN_RIGHT)), rig)
            seq_states.append(nxt)
        frames = [scene.render(pose_from_state(s), size, height or size) for s in seq_states]
        rgb.append(np.stack([f.rgb for f in frames]))
        depth.append(np.stack([f.depth for f in frames]))
        static.append(np.stack([f.labels == LABEL_STATIC for f in frames]))
        states.append(np.stack(seq_states))
    return Sequences(np.stack(rgb), np.stack(depth), np.stack(static), np.stack(states))


def export_clips(out, clips: int, frames: int = 17, width: int = 64, height: int = 64, seed: int = 0,
                 progress: bool = True) -> list:
    """Write ``clips`` procedural-scene clips (walks, turns, out-and-back loops) with true
    depth, poses and masks in the :mod:`mirage_gym.clips` format; returns their paths."""
    from pathlib import Path

    from mirage_gym.clips import Clip, write_clip
    from mirage_gym.geometry import intrinsics_from_fov

    for name, value, least in (("clips", clips, 1), ("frames", frames, 2), ("width", width, 8), ("height", height, 8)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    data = render_sequences(range(seed * 100_000, seed * 100_000 + clips), length=frames, size=width, seed=seed,
                            progress=progress, height=height)
    k = intrinsics_from_fov(width, height, 90.0)
    paths = []
    for i in range(clips):
        clip = Clip(frames=data.rgb[i], poses_c2w=pose_from_state(data.states[i]), intrinsics=np.repeat(k[None], frames, 0),
                    depths=data.depth[i], masks=~data.static[i], fps=8.0, caption="")
        paths.append(write_clip(Path(out) / f"clip_{i:05d}", clip))
    return paths
