"""MirageWorldEnv against Gymnasium's and stable-baselines3's expectations."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mirage_gym  # noqa: F401  (registers the ids)
from mirage_gym.geometry import Action
from mirage_gym.registration import load_specs
from stand_in import PoolingBackend

IDS = [spec["id"] for spec in load_specs()]


def make(env_id, **kwargs):
    kwargs.setdefault("model", "tiny")  # the shipped default, as users get it
    return gym.make(env_id, **kwargs)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id):
    env = make(env_id, max_episode_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # allowed: metric depth is a float32 (H, W, 1) map on purpose, which SB3 flags as
        # "an image that is not uint8"; its MultiInputPolicy flattens it, as intended
        warnings.filterwarnings("ignore", message="It seems that your observation (space )?depth is an image")
        gym_check_env(env.unwrapped)  # with its defaults: every listed render mode, close twice
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_observations(env_id):
    rollouts = []
    for _ in range(2):
        env = make(env_id)
        env.action_space.seed(3)
        obs, _ = env.reset(seed=11)
        frames = [obs]
        for _ in range(4):
            obs, *_ = env.step(env.action_space.sample())
            frames.append(obs)
        rollouts.append(frames)
    for a, b in zip(*rollouts):
        if isinstance(a, dict):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
        else:
            np.testing.assert_array_equal(a, b)


def test_types_and_info_follow_the_contract():
    env = make("MirageWorld-v0", max_episode_steps=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info["pose"].shape == (4, 4) and info["pose"].dtype == np.float64
    np.testing.assert_array_equal(info["pose"], np.eye(4))
    assert info["intrinsics"].shape == (3, 3)
    info["pose"][0, 0] = 5.0  # fresh copies: mutating them changes nothing
    for t in range(3):
        obs, reward, terminated, truncated, info = env.step(0)
        assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
        assert info["pose"][0, 0] != 5.0
    assert truncated and not terminated
    assert set(info) >= {"pose", "intrinsics", "memory_points", "memory_bytes", "coverage_voxels", "novelty", "collision"}


def test_explore_reward_pays_for_new_views_only():
    env = make("MirageWorld-v0")
    env.reset(seed=0)
    _, turned, *_ = env.step(5)
    _, back, *_ = env.step(4)
    assert turned > 0 and back < 0.1 * turned


def test_env_pickles():
    env = make("MirageWorld-v0")
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    a = env.step(5)[0]
    b = clone.step(5)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("action", [9, -1, 1.5, np.array([1, 2]), "left"])
def test_invalid_discrete_actions_raise(action):
    env = make("MirageWorld-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize("action", [np.zeros(5), np.full(6, np.nan), np.full(6, 2.0)])
def test_invalid_continuous_actions_raise(action):
    env = make("MirageWorldContinuous-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_reset_from_a_user_image_of_any_size():
    env = make("MirageWorld-v0")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)
    depth = np.full((120, 90), 3.0, np.float32)
    dynamic = np.zeros((120, 90), bool)
    dynamic[:10, :10] = True
    obs, info = env.reset(seed=0, options={"image": image, "depth": depth, "dynamic_mask": dynamic, "fov_deg": 70})
    assert obs.shape == (64, 64, 3)
    assert info["intrinsics"][0, 0] == pytest.approx(32 / np.tan(np.radians(35)))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"image": np.zeros((64, 64), np.uint8)}, "image"),
        ({"image": np.zeros((64, 64, 3), np.float32)}, "image"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "depth": np.zeros((3, 3))}, "depth"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "depth": np.full((64, 64), np.nan)}, "depth"),
        ({"image": np.zeros((64, 64, 3), np.uint8), "dynamic_mask": np.zeros((2, 2))}, "dynamic_mask"),
        ({"depth": np.ones((64, 64))}, "image"),
        ({"fov_deg": 0}, "fov_deg"),
        ({"colour": 1}, "unknown"),
    ],
)
def test_invalid_reset_options_raise(options, match):
    env = make("MirageWorld-v0")
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)


def test_wrappers_work():
    from gymnasium.wrappers import FrameStackObservation, ResizeObservation

    env = ResizeObservation(make("MirageWorld-v0", render_mode="rgb_array"), (84, 84))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 3)
    env = FrameStackObservation(make("MirageWorld-v0"), 4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 64, 64, 3)
    obs, *_ = env.step(5)
    assert obs.shape == (4, 64, 64, 3)


def test_record_video(tmp_path):
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(make("MirageWorld-v0", render_mode="rgb_array", max_episode_steps=5), str(tmp_path / "videos"), disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(5)
        done = terminated or truncated
    env.close()
    assert list((tmp_path / "videos").glob("*.mp4"))


def test_render_with_map():
    env = make("MirageWorld-v0", render_mode="rgb_array", render_map=True)
    env.reset(seed=0)
    env.step(0)
    image = env.render()
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8


def test_keys_to_action_cover_the_moves():
    env = make("MirageWorld-v0")
    keys = env.unwrapped.get_keys_to_action()
    assert sorted(int(a) for a in keys.values()) == list(range(8))


def test_snapshot_round_trip_continues_identically(tmp_path):
    env = make("MirageWorld-v0")
    env.reset(seed=4)
    for a in (5, 5, 0):
        env.step(a)
    env.unwrapped.save_snapshot(tmp_path / "world.snap")
    expected = [env.step(a) for a in (4, 4, 0, 6)]
    other = make("MirageWorld-v0")
    other.reset(seed=99)
    other.unwrapped.load_snapshot(tmp_path / "world.snap")
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(expected, [other.step(a) for a in (4, 4, 0, 6)]):
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2 and tr1 == tr2
        np.testing.assert_array_equal(i1["pose"], i2["pose"])
        assert i1["memory_points"] == i2["memory_points"]


def test_corrupt_or_incompatible_snapshots_are_refused(tmp_path):
    from mirage_gym.snapshot import SnapshotError

    env = make("MirageWorld-v0")
    env.reset(seed=1)
    env.step(5)
    good = tmp_path / "good.snap"
    env.unwrapped.save_snapshot(good)
    data = good.read_bytes()
    before = env.unwrapped.world.snapshot(0)[0]

    def refused(payload, match):
        bad = tmp_path / "bad.snap"
        bad.write_bytes(payload)
        with pytest.raises(SnapshotError, match=match):
            env.unwrapped.load_snapshot(bad)

    refused(data[: len(data) // 2], "corrupt or truncated")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    refused(bytes(flipped), "checksum")
    refused(b"not a snapshot at all", "corrupt or truncated")
    with pytest.raises(SnapshotError, match="not found"):
        env.unwrapped.load_snapshot(tmp_path / "missing.snap")
    wide = make("MirageWorld128-v0")
    wide.reset(seed=0)
    with pytest.raises(SnapshotError, match="configuration"):
        wide.unwrapped.load_snapshot(good)
    # the env and the good file are untouched
    after = env.unwrapped.world.snapshot(0)[0]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert good.read_bytes() == data


def test_episode_length_follows_gym_make_beyond_the_registered_limit():
    env = make("MirageWorld-v0", max_episode_steps=503)
    env.reset(seed=0)
    truncated, steps = False, 0
    while not truncated:
        *_, truncated, _ = env.step(int(Action.NOOP))
        steps += 1
    assert steps == 503
    assert gym.spec("MirageWorld-v0").max_episode_steps == 500


def test_render_modes_list_only_modes_that_work():
    from mirage_gym.env import HAS_PYGAME, MirageWorldEnv

    assert ("human" in MirageWorldEnv.metadata["render_modes"]) == HAS_PYGAME


def test_conventions_users_reach_for():
    import subprocess
    import sys

    from mirage_gym import Action as Exported

    assert Exported is Action
    env = make("MirageWorld-v0")
    assert env.unwrapped.get_action_meanings() == [a.name for a in Action] and len(Action) == env.action_space.n
    assert env.unwrapped.get_action_meanings()[int(Action.LOOK_UP)] == "LOOK_UP"
    assert len(make("MirageWorldContinuous-v0").unwrapped.get_action_meanings()) == 6
    result = subprocess.run([sys.executable, "-m", "mirage_gym", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "render" in result.stdout
