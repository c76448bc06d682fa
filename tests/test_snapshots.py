"""Snapshots are all or nothing: crafted or edited files are refused with the env unchanged,
the episode clock survives save/load under gym.make, and saves write only regular files."""

import json
import os
import stat

import gymnasium as gym
import numpy as np
import pytest
import torch

import mirage_gym
from mirage_gym import snapshot
from mirage_gym.snapshot import SnapshotError
from stand_in import PoolingBackend


def make(env_id="MirageWorldDict-v0", **kwargs):
    return gym.make(env_id, model=PoolingBackend(), **kwargs)


def env_state(env):
    """Everything a load could touch, as comparable plain values."""
    u = env.unwrapped
    tensors, meta = u.world.snapshot(0)
    return {
        "tensors": {k: v.clone() for k, v in tensors.items()},
        "meta": json.dumps(meta, sort_keys=True),
        "elapsed": u._elapsed,
        "rng": json.dumps(u.np_random.bit_generator.state, sort_keys=True),
        "path": np.asarray(u._path).copy(),
        "rgb": u._frame.rgb.copy(),
        "novelty": u._frame.novelty.copy(),
    }


def assert_same_state(a, b):
    assert a["tensors"].keys() == b["tensors"].keys()
    for k in a["tensors"]:
        assert torch.equal(a["tensors"][k], b["tensors"][k]), k
    assert a["meta"] == b["meta"] and a["elapsed"] == b["elapsed"] and a["rng"] == b["rng"]
    for k in ("path", "rgb", "novelty"):
        np.testing.assert_array_equal(a[k], b[k])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    env = make()
    env.reset(seed=2)
    for a in (5, 0, 6, 0):
        env.step(a)
    path = tmp_path_factory.mktemp("snap") / "good.snap"
    mirage_gym.save_snapshot(env, path)
    return path


def _edit(tensors, meta, edit):
    kind, name, value = edit
    if kind == "env":
        meta["env"][name] = value
    elif kind == "drop":
        del tensors[name]
    elif kind == "set":
        tensors[name] = value(tensors[name]) if callable(value) else value
    return tensors, meta


CRAFTED = {
    "negative elapsed": ("env", "elapsed", -5),
    "elapsed off the world's clock": ("env", "elapsed", 3),
    "elapsed as a string": ("env", "elapsed", "4"),
    "novelty NaN": ("env", "novelty", float("nan")),
    "novelty above 1": ("env", "novelty", 2.0),
    "collision not a bool": ("env", "collision", "yes"),
    "RNG state garbage": ("env", "np_random", {"bit_generator": "PCG64", "state": 7}),
    "NaN rig state": ("set", "state", lambda t: torch.full_like(t, float("nan"))),
    "rig state as float32": ("set", "state", lambda t: t.float()),
    "pose beyond the observation bounds": ("set", "state", lambda t: torch.tensor([2e4, 0, 0, 0, 0, 0.0], dtype=t.dtype)),
    "pitch beyond the rig's limit": ("set", "state", lambda t: torch.tensor([0, 0, 0, 0, 1.5, 0.0], dtype=t.dtype)),
    "NaN context": ("set", "context", lambda t: torch.full_like(t, float("nan"))),
    "NaN depth": ("set", "depth", lambda t: torch.full_like(t, float("nan"))),
    "negative focal length": ("set", "intrinsics", lambda t: -t),
    "frame.rgb of another size": ("set", "frame.rgb", torch.zeros(32, 32, 3, dtype=torch.uint8)),
    "frame.rgb as float": ("set", "frame.rgb", lambda t: t.float()),
    "path of the wrong length": ("set", "path", lambda t: t[:2]),
    "sky tensors dropped": ("drop", "memory.sky_directions", None),
    "memory features dropped": ("drop", "memory.features", None),
    "unsorted coverage": ("set", "coverage", lambda t: t.flip(0)),
    "an unexpected tensor": ("set", "extra", torch.zeros(3)),
    "NaN memory points": ("set", "memory.xyz", lambda t: torch.full_like(t, float("nan"))),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_snapshots_are_refused_and_leave_the_env_unchanged(saved, tmp_path, case):
    tensors, meta = snapshot.load_snapshot(saved)
    tensors, meta = _edit(tensors, meta, CRAFTED[case])
    crafted = tmp_path / "crafted.snap"
    snapshot.save_snapshot(crafted, tensors, meta)  # a valid checksum: only the content is wrong
    env = make()
    env.reset(seed=9)
    env.step(5)
    before = env_state(env)
    with pytest.raises(SnapshotError, match="does not fit|configuration"):
        env.unwrapped.load_snapshot(crafted)
    assert_same_state(before, env_state(env))
    env.step(0)  # and it goes on working
    assert env.unwrapped.adapter.info(env.unwrapped._frame, 0)["novelty"] >= 0


def test_edited_metadata_fails_the_checksum(saved, tmp_path):
    data = saved.read_bytes()
    assert data.count(b'\\"elapsed\\": 4') == 1
    edited = tmp_path / "edited.snap"
    edited.write_bytes(data.replace(b'\\"elapsed\\": 4', b'\\"elapsed\\": 0'))
    env = make()
    env.reset(seed=1)
    with pytest.raises(SnapshotError, match="checksum"):
        env.unwrapped.load_snapshot(edited)


def test_a_version_1_snapshot_is_refused_by_name(saved, tmp_path):
    data = saved.read_bytes()
    old = tmp_path / "old.snap"
    old.write_bytes(data.replace(b'\\"version\\": 2', b'\\"version\\": 1'))
    env = make()
    env.reset(seed=1)
    with pytest.raises(SnapshotError, match="version 1"):
        env.unwrapped.load_snapshot(old)


def test_the_episode_clock_survives_save_and_load_under_gym_make(tmp_path):
    long = make(max_episode_steps=30)
    long.reset(seed=0)
    for t in range(20):
        long.step(5)
        if t == 1:
            mirage_gym.save_snapshot(long, tmp_path / "step2.snap")
    mirage_gym.save_snapshot(long, tmp_path / "step20.snap")
    # saved at step 20, loaded into a fresh (never reset) 10-step env: truncated next step
    short = make(max_episode_steps=10)
    mirage_gym.load_snapshot(short, tmp_path / "step20.snap")
    assert short.step(0)[3] is True
    # saved at step 2, loaded into a 6-step env at step 5: four more steps, not one
    other = make(max_episode_steps=6)
    other.reset(seed=3)
    for _ in range(5):
        other.step(0)
    mirage_gym.load_snapshot(other, tmp_path / "step2.snap")
    assert [other.step(0)[3] for _ in range(4)] == [False, False, False, True]


def test_saves_refuse_non_regular_targets(tmp_path):
    env = make()
    env.reset(seed=0)
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (folder, fifo):
        with pytest.raises(SnapshotError, match="not a regular file"):
            mirage_gym.save_snapshot(env, target)
    assert folder.is_dir() and stat.S_ISFIFO(fifo.lstat().st_mode)
    # a symbolic link is followed: the link stays, its file gets the snapshot
    real = tmp_path / "real.snap"
    real.write_bytes(b"old")
    link = tmp_path / "link.snap"
    link.symlink_to(real)
    mirage_gym.save_snapshot(env, link)
    assert link.is_symlink() and real.read_bytes() != b"old"
    env.unwrapped.load_snapshot(link)


def test_saves_keep_the_mode_of_a_replaced_file_and_give_new_files_the_usual_one(tmp_path):
    env = make()
    env.reset(seed=0)
    existing = tmp_path / "shared.snap"
    existing.write_bytes(b"")
    existing.chmod(0o640)
    mirage_gym.save_snapshot(env, existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    umask = os.umask(0o022)
    try:
        mirage_gym.save_snapshot(env, tmp_path / "new.snap")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.snap").stat().st_mode) == 0o644


def test_saves_remove_temporaries_a_killed_save_left_and_keep_live_ones(tmp_path):
    env = make()
    env.reset(seed=0)
    target = tmp_path / "world.snap"
    dead = tmp_path / f".{target.name}.{2**22 + 12345}-1.tmp"  # beyond Linux's pid_max: no such process
    live = tmp_path / f".{target.name}.{os.getppid()}-1.tmp"  # a running process may still be writing it
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    mirage_gym.save_snapshot(env, target)
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])


def test_a_refused_load_through_the_wrappers_keeps_their_step_count(tmp_path):
    env = make(max_episode_steps=4)
    env.reset(seed=0)
    env.step(0)
    env.step(0)
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"garbage")
    with pytest.raises(SnapshotError):
        mirage_gym.load_snapshot(env, bad)
    with pytest.raises(ValueError, match="snapshot.*alone"):
        env.unwrapped.reset(seed=1, options={"snapshot": bad})
    assert [env.step(0)[3] for _ in range(2)] == [False, True]
