"""Procedural 3D scenes rendered exactly: the training data and ground truth of the world model.

``make_scene(seed)`` builds an indoor room (with neighbouring rooms / corridors) or an outdoor
courtyard out of axis-aligned boxes with procedural, view-independent textures;
``scene.render(pose)`` ray-casts RGB (supersampled, box-filtered), exact z-depth and
static / sky / dynamic labels; ``scene.is_free(points)`` supports collision-free sampling.

Conventions (see ``mirage_gym.geometry``): pose = 4x4 camera-to-world, OpenCV axes (x right,
y down, z forward), metres. The world frame is the reset camera frame: the identity pose is
free, 1.5 m above the floor plane ``y = FLOOR_Y = +1.5``, and looks along +z into the scene.
"""

from __future__ import annotations

import numpy as np

from .layout import FLOOR_Y, LABEL_DYNAMIC, LABEL_SKY, LABEL_STATIC, Layout, add_dynamic, build_indoor, build_outdoor
from .render import Probe, Render, Scene, default_supersample

KINDS = ("indoor", "outdoor")


def make_scene(seed: int, kind: str | None = None, dynamic_objects: int = 0) -> Scene:
    """Deterministic scene for ``seed``; ``kind`` "indoor" / "outdoor" or None (chosen by seed).

    The kind, the static layout and the dynamic objects use separate random streams, so a
    given ``(seed, kind)`` has the same static layout whatever ``dynamic_objects`` is.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if kind is None:
        kind = KINDS[int(np.random.default_rng([int(seed), 0]).integers(2))]
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    if isinstance(dynamic_objects, bool) or not isinstance(dynamic_objects, (int, np.integer)) or dynamic_objects < 0:
        raise ValueError(f"dynamic_objects must be a non-negative integer, got {dynamic_objects!r}")
    build = build_indoor if kind == "indoor" else build_outdoor
    layout = build(np.random.default_rng([int(seed), 1, KINDS.index(kind)]))
    if dynamic_objects:
        layout = add_dynamic(layout, np.random.default_rng([int(seed), 2]), int(dynamic_objects))
    return Scene(layout, int(seed))


__all__ = [
    "make_scene",
    "Scene",
    "Render",
    "Probe",
    "Layout",
    "default_supersample",
    "FLOOR_Y",
    "KINDS",
    "LABEL_STATIC",
    "LABEL_SKY",
    "LABEL_DYNAMIC",
]
