"""Behaviour pinned across refactors: a fixed-seed rollout's frames equal the recorded ones.

The fixture comes from ``tests/data/record_rollout.py`` (re-record it with that one
command only when the shipped weights or the world's behaviour are meant to change).
"""

import numpy as np

from data.record_rollout import FIXTURE, rollout


def test_fixed_seed_rollout_frames_are_identical_to_the_fixture():
    expected = np.load(FIXTURE)
    frames = rollout()
    for name in ("single", "vector"):
        assert frames[name].dtype == np.uint8
        assert frames[name].shape == expected[name].shape, name
        differ = np.flatnonzero((frames[name] != expected[name]).reshape(len(frames[name]), -1).any(axis=1))
        assert differ.size == 0, f"{name}: frames {differ.tolist()} differ from the fixture"
