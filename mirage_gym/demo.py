"""The README's main job: a short scripted tour of a generated world, saved as mp4 + PNG strip."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mirage_gym.geometry import Action

# look around, walk out, turn back and return: every part of it revisits what it saw
TOUR = (
    [Action.TURN_RIGHT] * 24
    + [Action.MOVE_FORWARD] * 6
    + [Action.TURN_LEFT] * 12
    + [Action.MOVE_FORWARD] * 6
    + [Action.TURN_LEFT] * 12
)


def run_demo(out_dir: str | Path = "outputs/demo", seed: int = 0, model: str = "tiny", env_id: str = "MirageWorld-v0") -> dict:
    """Run :data:`TOUR` in ``env_id`` and write ``tour.mp4`` and ``tour.png``; returns a summary."""
    import gymnasium as gym
    import imageio.v3 as iio

    import mirage_gym  # noqa: F401  (registers the ids)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id, render_mode="rgb_array", render_map=True, model=model, max_episode_steps=len(TOUR))
    env.reset(seed=seed)
    frames = [env.render()]
    total_reward, collisions = 0.0, 0
    start = time.perf_counter()
    for action in TOUR:
        _, reward, _, _, info = env.step(int(action))
        total_reward += reward
        collisions += int(info["collision"])
        frames.append(env.render())
    seconds = time.perf_counter() - start
    env.close()
    scale = 4
    big = [np.repeat(np.repeat(f, scale, 0), scale, 1) for f in frames]
    iio.imwrite(out / "tour.mp4", np.stack(big), fps=8, codec="libx264", macro_block_size=1)
    strip = np.concatenate(frames[:: max(1, len(frames) // 12)][:12], axis=0 if frames[0].shape[1] > frames[0].shape[0] else 1)
    iio.imwrite(out / "tour.png", strip)
    return {
        "video": str(out / "tour.mp4"),
        "strip": str(out / "tour.png"),
        "steps": len(TOUR),
        "steps_per_second": len(TOUR) / seconds,
        "reward": total_reward,
        "collisions": collisions,
        "memory_points": info["memory_points"],
        "memory_bytes": info["memory_bytes"],
    }
