"""All registrations in one place: the ids and presets come from ``envs/specs.json``."""

from __future__ import annotations

import json
from importlib import resources

import gymnasium as gym


def load_specs() -> list[dict]:
    """The env specs shipped with the package (``mirage_gym.env_specs`` is the ``envs/`` folder)."""
    text = resources.files("mirage_gym.env_specs").joinpath("specs.json").read_text()
    data = json.loads(text)
    return [dict(data["defaults"], **spec) for spec in data["envs"]]


def register_envs() -> list[str]:
    """Register every spec with gymnasium (idempotent); returns the ids."""
    ids = []
    for spec in load_specs():
        if spec["id"] not in gym.registry:
            gym.register(
                id=spec["id"],
                entry_point=spec["entry_point"],
                vector_entry_point=spec["vector_entry_point"],
                max_episode_steps=spec.get("max_episode_steps"),
                kwargs=spec["kwargs"],
            )
        ids.append(spec["id"])
    return ids
