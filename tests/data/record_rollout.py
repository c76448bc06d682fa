"""Record the fixed-seed rollout that ``tests/test_rollout_fixture.py`` checks frames against.

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/record_rollout.py

writes ``tests/data/rollout_tiny.npz``: the uint8 frames of a short rollout of the shipped
tiny model (a single env, and a vector env of two worlds, so that both the one-world and
the batched memory paths are pinned). Re-record it, with this one command, only when the
shipped weights or the world's behaviour are meant to change; a refactor must leave the
frames identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).with_name("rollout_tiny.npz")
SEED = 7
# forward, a full turn (24 x 15 degrees: back to a pose seen before), strafes, looks, back
ACTIONS = [0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 2, 3, 6, 7, 1, 1, 8]
VECTOR_STEPS = 12


def rollout() -> dict[str, np.ndarray]:
    """The frames of the fixed rollouts (single env: (T+1, H, W, 3); vector env: (T+1, 2, H, W, 3))."""
    import gymnasium as gym

    import mirage_gym  # noqa: F401  (registers the ids)

    env = gym.make("MirageWorld-v0")
    obs, _ = env.reset(seed=SEED)
    single = [obs]
    for action in ACTIONS:
        obs, *_ = env.step(action)
        single.append(obs)
    env.close()

    envs = gym.make_vec("MirageWorld-v0", num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=SEED)
    vector = [obs]
    for t in range(VECTOR_STEPS):
        obs, *_ = envs.step(np.array([ACTIONS[t], ACTIONS[-1 - t]]))
        vector.append(obs)
    envs.close()
    return {"single": np.stack(single), "vector": np.stack(vector)}


if __name__ == "__main__":
    frames = rollout()
    np.savez_compressed(FIXTURE, **frames)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes): " + ", ".join(f"{k} {v.shape}" for k, v in frames.items()))
