"""World-core plumbing with a transparent stand-in backend (no trained weights needed)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirage_gym.geometry import Action, discrete_to_continuous
from mirage_gym.memory import static_keep_mask
from mirage_gym.scenes import make_scene
from mirage_gym.world import World, WorldConfig, align_depth_to_memory, place_at_landings
from stand_in import PoolingBackend


def start(world, seed=0, index=0):
    scene = make_scene(seed, kind="indoor")
    r = scene.render(np.eye(4), world.config.width, world.config.height)
    return world.reset(index, r.rgb, r.depth, static_keep_mask(r.depth, r.labels).numpy(), seed=seed)


def turn(world, action, n):
    motion = np.repeat(discrete_to_continuous(action)[None], world.num_worlds, 0)
    for _ in range(n):
        frame = world.step(motion)
    return frame


def test_a_full_turn_comes_back_to_the_seed_frame_only_with_memory():
    errors = {}
    for use_memory in (True, False):
        world = World(PoolingBackend(), WorldConfig(use_memory=use_memory))
        start(world)
        seed_view = world.backend.decode(world.context[:, -1])[0]
        last = turn(world, Action.TURN_RIGHT, 24)
        np.testing.assert_allclose(last.pose[0], np.eye(4), atol=1e-9)
        errors[use_memory] = np.abs(last.rgb[0] / 255.0 - seed_view[0].permute(1, 2, 0).numpy()).mean()
    assert errors[True] < 0.01 and errors[False] > 0.05, errors


def test_seeded_worlds_are_deterministic_and_batched_matches_single():
    a = World(PoolingBackend(), num_worlds=2)
    start(a, seed=0, index=0)
    start(a, seed=1, index=1)
    b = World(PoolingBackend())
    start(b, seed=1)
    fa = turn(a, Action.TURN_LEFT, 3)
    fb = turn(b, Action.TURN_LEFT, 3)
    np.testing.assert_array_equal(fa.rgb[1], fb.rgb[0])
    np.testing.assert_array_equal(fa.pose[1], fb.pose[0])


def test_walking_into_remembered_geometry_is_blocked():
    world = World(PoolingBackend())
    start(world)
    collided = False
    for _ in range(60):
        frame = world.step(discrete_to_continuous(Action.MOVE_FORWARD)[None])
        if frame.collision[0]:
            collided = True
            break
    assert collided
    depth_ahead = frame.depth[0][28:36, 28:36]
    assert np.nanmin(depth_ahead) >= world.config.clearance * 0.5


def test_exploring_adds_coverage_and_novelty_drops_on_return():
    world = World(PoolingBackend())
    start(world)
    out = turn(world, Action.TURN_RIGHT, 4)
    assert out.new_voxels[0] > 0 and out.novelty[0] > 0
    back = turn(world, Action.TURN_LEFT, 4)
    assert back.novelty[0] < 0.1


def test_bad_reset_and_step_input():
    world = World(PoolingBackend())
    with pytest.raises(ValueError, match="rgb"):
        world.reset(0, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="motions"):
        world.step(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="multiples"):
        World(PoolingBackend(), WorldConfig(width=66, height=64))


def test_remembered_cells_take_the_depth_of_their_points():
    depth = torch.full((1, 1, 8, 8), 2.0)
    depth[..., :4, 4:] = math.inf  # a sky cell stays sky
    memory_depth = torch.tensor([[[[1.5, math.inf], [3.0, 2.5]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    out = align_depth_to_memory(depth, memory_depth, mask)
    assert torch.all(out[..., :4, :4] == 1.5) and torch.all(torch.isinf(out[..., :4, 4:]))
    assert torch.all(out[..., 4:, :4] == 3.0) and torch.all(out[..., 4:, 4:] == 2.5)
    no_memory = align_depth_to_memory(depth, torch.full_like(memory_depth, math.inf), torch.zeros_like(mask))
    assert torch.equal(no_memory, depth)


def test_landings_move_decoded_content_by_the_offsets():
    """A quarter-cell offset is one pixel at 64x64 over a 16x16 grid: colour and depth move
    by exactly one pixel (border pixels repeat), and sky stays sky."""
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.random((1, 3, 64, 64))).float()
    depth = torch.from_numpy(rng.uniform(1, 5, (1, 1, 64, 64))).float()
    depth[..., :10, :] = math.inf
    offset = torch.zeros(1, 2, 16, 16)
    offset[:, 0] = 0.25
    moved_rgb, moved_depth = place_at_landings(rgb, depth, offset)
    torch.testing.assert_close(moved_rgb[..., 1:], rgb[..., :-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(moved_depth[..., 1:], depth[..., :-1])
    assert torch.isinf(moved_depth[..., :10, :]).all() and torch.isfinite(moved_depth[..., 10:, :]).all()
    still_rgb, still_depth = place_at_landings(rgb, depth, torch.zeros_like(offset))
    torch.testing.assert_close(still_rgb, rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(still_depth, depth)


def test_snapshots_saved_before_context_windows_still_restore():
    world = World(PoolingBackend())
    start(world)
    turn(world, Action.TURN_LEFT, 2)
    tensors, meta = world.snapshot(0)
    assert tensors["context"].shape == (1, 4, 16, 16)  # a window of one context frame
    old = dict(tensors, context=tensors["context"][0])  # the layout earlier versions saved
    other = World(PoolingBackend())
    start(other, seed=3)
    other.restore(0, old, meta)
    a, b = turn(world, Action.MOVE_FORWARD, 2), turn(other, Action.MOVE_FORWARD, 2)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    with pytest.raises(ValueError, match="'context' must have shape"):
        other.restore(0, dict(tensors, context=tensors["context"][0, :2]), meta)
