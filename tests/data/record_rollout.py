"""Record the fixed-seed rollout that ``tests/test_rollout_fixture.py`` checks frames against.

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/record_rollout.py

writes ``tests/data/rollout_tiny.json``: the SHA-256 of every uint8 frame of a short rollout
of the shipped tiny model (text, not a binary copy of the frames) (a single env, and a vector env of two worlds, so that both the one-world and
the batched memory paths are pinned). Re-record it, with this one command, only when the
shipped weights or the world's behaviour are meant to change; a refactor must leave the
frames identical.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).with_name("rollout_tiny.json")
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


def fingerprint(frames: dict[str, np.ndarray]) -> dict[str, dict]:
    """Shape, dtype and one SHA-256 per step of each rollout (equal hashes: identical frames)."""
    return {name: {"shape": list(v.shape), "dtype": str(v.dtype),
                   "sha256": [hashlib.sha256(np.ascontiguousarray(step).tobytes()).hexdigest() for step in v]}
            for name, v in frames.items()}


if __name__ == "__main__":
    frames = rollout()
    FIXTURE.write_text(json.dumps(fingerprint(frames), indent=1) + "\n")
    print(f"wrote {FIXTURE}: " + ", ".join(f"{k} {v.shape}" for k, v in frames.items()))
