"""Bad input gets a precise ValueError naming the parameter and leaves the env as it was;
a refused reset does not move the RNG."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils import seeding

import mirage_gym  # noqa: F401
from mirage_gym import env as env_module
from stand_in import PoolingBackend


def make(env_id="MirageWorld-v0", **kwargs):
    return gym.make(env_id, model=PoolingBackend(), **kwargs)


def make_vec(num_envs=2, **kwargs):
    return gym.make_vec("MirageWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        model=PoolingBackend(), **kwargs)


def world_state(env):
    tensors, _ = env.unwrapped.world.snapshot(0)
    return tensors, repr(env.unwrapped.np_random.bit_generator.state)


def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert a[1] == b[1]


IMAGE = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed", [None, 5])
def test_a_refused_reset_leaves_the_rng_and_the_next_reset_as_without_it(seed):
    plain, refused = make(), make()
    for env in (plain, refused):
        env.reset(seed=3)
        env.step(5)
    with pytest.raises(ValueError, match="fov_deg"):
        refused.reset(seed=seed, options={"fov_deg": True})
    assert_same(world_state(plain), world_state(refused))
    a, b = plain.reset(), refused.reset()
    np.testing.assert_array_equal(a[0], b[0])
    assert_same(world_state(plain), world_state(refused))


def test_a_given_scene_seed_draws_nothing_from_the_rng():
    env = make()
    env.reset(seed=1, options={"scene_seed": 7})
    rng = seeding.np_random(1)[0]
    rng.integers(2**31)  # the noise seed, the only draw
    assert env.unwrapped.np_random.bit_generator.state == rng.bit_generator.state


def test_a_refused_vector_reset_reseeds_nothing():
    plain, refused = make_vec(), make_vec()
    for vec in (plain, refused):
        vec.reset(seed=0)
    with pytest.raises(ValueError, match="unknown reset options"):
        refused.reset(seed=9, options={"colour": 1})
    np.testing.assert_array_equal(plain.reset()[0], refused.reset()[0])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"fov_deg": True}, "fov_deg"),
        ({"fov_deg": "60"}, "fov_deg"),
        ({"fov_deg": float("nan")}, "fov_deg"),
        ({"scene_seed": 1.7}, "scene_seed"),
        ({"scene_seed": "5"}, "scene_seed"),
        ({"scene_seed": -1}, "scene_seed"),
        ({"scene_seed": True}, "scene_seed"),
        ({"image": IMAGE, "scene_seed": 3}, "scene_seed"),
        ({"image": IMAGE, "depth": np.zeros((80, 96))}, "depth.*positive"),
        ({"image": IMAGE, "depth": np.full((80, 96), 1 + 1j)}, "depth"),
        ({"image": IMAGE, "dynamic_mask": np.full((80, 96), 0.5)}, "dynamic_mask"),
        ({"image": IMAGE, "dynamic_mask": np.full((80, 96), np.nan)}, "dynamic_mask"),
        ({"image": IMAGE, "dynamic_mask": np.full((80, 96), "yes")}, "dynamic_mask"),
    ],
)
def test_bad_reset_options_are_refused_with_state_intact(options, match):
    env = make()
    env.reset(seed=2)
    env.step(5)
    before = world_state(env)
    with pytest.raises(ValueError, match=match):
        env.reset(options=options)
    assert_same(before, world_state(env))


@pytest.mark.parametrize(
    "options",
    [
        {"fov_deg": np.float32(60)},
        {"fov_deg": np.int64(70)},
        {"scene_seed": np.int64(5)},
        {"image": IMAGE[::-1, ::-1]},  # negative strides
        {"image": IMAGE, "depth": np.full((80, 96), 2, np.int32), "dynamic_mask": np.eye(80, 96, dtype=np.int64)},
    ],
)
def test_numpy_scalars_strided_images_and_integer_masks_are_accepted(options):
    obs, _ = make().reset(seed=0, options=options)
    assert obs.shape == (64, 64, 3)


def test_a_dynamic_mask_masks_what_it_says():
    mask = np.zeros((80, 96), bool)
    mask[:40] = True
    env = make()
    _, masked = env.reset(seed=0, options={"image": IMAGE, "depth": np.full((80, 96), 3.0), "dynamic_mask": mask})
    _, full = env.reset(seed=0, options={"image": IMAGE, "depth": np.full((80, 96), 3.0)})
    assert 0 < masked["memory_points"] < full["memory_points"]


@pytest.mark.parametrize(
    "action",
    [np.full(6, 0.5 + 0.5j), np.array(["a"] * 6), np.ones(6, bool), [None] * 6, np.full(6, np.inf), np.zeros((2, 6))],
)
def test_bad_continuous_actions_are_refused_with_state_intact(action):
    env = make("MirageWorldContinuous-v0")
    env.reset(seed=0)
    env.step(np.zeros(6, np.float32))
    before = world_state(env)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert_same(before, world_state(env))


@pytest.mark.parametrize(
    "name, value",
    [
        ("frames_per_step", 0),
        ("frames_per_step", 1.0),
        ("move_step", -0.2),
        ("move_step", float("nan")),
        ("turn_step_deg", 0),
        ("pitch_limit_deg", 95),
        ("max_depth", 0),
        ("reward_per_voxel", float("nan")),
        ("collision_penalty", float("inf")),
        ("width", 64.0),
        ("height", 32),
        ("fov_deg", True),
        ("fov_deg", 180),
        ("use_memory", "yes"),
        ("render_map", 1),
        ("scene_kind", "forest"),
        ("dynamic_objects", -1),
        ("memory_capacity", 0),
        ("max_episode_steps", 0),
        ("device", "gpu0"),
        ("device", "cuda:7" if not __import__("torch").cuda.is_available() else "cuda:99"),
        ("dtype", "int8"),
    ],
)
def test_bad_env_arguments_are_refused_by_name(name, value):
    # the env itself, not gym.make: gym.make hands max_episode_steps to its TimeLimit, which
    # gymnasium 1.2 checks with an assert of its own
    from mirage_gym.env import MirageWorldEnv

    with pytest.raises(ValueError, match=name):
        MirageWorldEnv(model=PoolingBackend(), **{name: value})


# ---------------------------------------------------------------------------- vector env


def test_vector_env_refuses_step_and_render_before_reset_and_use_after_close():
    vec = make_vec(render_mode="rgb_array")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        vec.step(np.array([0, 0]))
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        vec.render()
    with pytest.raises(ValueError, match=r"reset_mask.*\[1\]"):
        vec.reset(seed=0, options={"reset_mask": np.array([True, False])})
    vec.reset(seed=0)
    assert len(vec.render()) == 2
    vec.close()
    with pytest.raises(gym.error.ClosedEnvironmentError):
        vec.step(np.array([0, 0]))
    with pytest.raises(gym.error.ClosedEnvironmentError):
        vec.reset(seed=0)


@pytest.mark.parametrize("actions", [0, None, {"a": 1}, "01", np.array([[0, 0, 0]])])
def test_vector_env_refuses_malformed_action_batches(actions):
    vec = make_vec()
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        vec.step(actions)


@pytest.mark.parametrize("seed", ["abc", "12", [1.5, 2], [True, 1], -1, {0: 1}, True])
def test_vector_env_refuses_malformed_seeds(seed):
    vec = make_vec()
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=seed)


# ---------------------------------------------------------------------------- rendering


def test_human_rendering_without_pygame_fails_at_construction(monkeypatch):
    monkeypatch.setattr(env_module, "HAS_PYGAME", False)
    with pytest.raises(gym.error.DependencyNotInstalled, match="pygame"):
        env_module.MirageWorldEnv(render_mode="human", model=PoolingBackend())


# ---------------------------------------------------------------------------- user images


def test_a_user_image_of_another_aspect_ratio_is_centre_cropped_with_its_fov():
    wide = np.zeros((64, 128, 3), np.uint8)
    wide[:, :32] = (255, 0, 0)  # cropped away
    wide[:, 32:96] = (0, 255, 0)  # kept
    wide[:, 96:] = (0, 0, 255)  # cropped away
    env = make()
    _, info = env.reset(options={"image": wide, "depth": np.full((64, 128), 3.0), "fov_deg": 90})
    assert env.unwrapped.world.intrinsics[0][0, 0] == pytest.approx(64.0)  # 90 deg over 128 px, 64 px kept
    assert info["intrinsics"][0, 0] == pytest.approx(64.0)
    _, info = env.reset(options={"image": wide, "fov_deg": 90, "image_fit": "stretch"})
    assert info["intrinsics"][0, 0] == pytest.approx(32.0)
    with pytest.raises(ValueError, match="image_fit"):
        env.reset(options={"image": wide, "image_fit": "fill"})


def test_the_crop_keeps_the_middle_of_the_image():
    from mirage_gym.env import user_frame

    wide = np.zeros((64, 128, 3), np.uint8)
    wide[:, 32:96] = 200
    rgb, _, _, fov = user_frame({"image": wide}, 64, 64, 90.0)
    assert (rgb == 200).all() and fov == pytest.approx(np.degrees(2 * np.arctan(0.5)))
    tall = np.zeros((128, 64, 3), np.uint8)
    tall[32:96] = 200
    rgb, _, _, fov = user_frame({"image": tall}, 64, 64, 90.0)
    assert (rgb == 200).all() and fov == 90.0
