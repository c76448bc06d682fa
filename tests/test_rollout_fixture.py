"""Behaviour pinned across refactors: a fixed-seed rollout's frames equal the recorded ones.

The fixture comes from ``tests/data/record_rollout.py`` (re-record it with that one
command only when the shipped weights or the world's behaviour are meant to change).
"""

import json

from data.record_rollout import FIXTURE, fingerprint, rollout


def test_fixed_seed_rollout_frames_are_identical_to_the_fixture():
    expected = json.loads(FIXTURE.read_text())
    got = fingerprint(rollout())
    for name in ("single", "vector"):
        assert got[name]["dtype"] == "uint8" and got[name]["shape"] == expected[name]["shape"], name
        differ = [t for t, (a, b) in enumerate(zip(got[name]["sha256"], expected[name]["sha256"])) if a != b]
        assert not differ, f"{name}: frames of steps {differ} differ from the fixture"
