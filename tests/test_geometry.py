import math

import numpy as np
import pytest
import torch

from mirage_gym import geometry as g


def random_pose(rng) -> np.ndarray:
    state = np.concatenate([rng.uniform(-2, 2, 3), rng.uniform(-math.pi, math.pi, 1), rng.uniform(-1, 1, 2)])
    return g.pose_from_state(state)


def test_intrinsics_from_fov_90_degrees():
    k = g.intrinsics_from_fov(64, 48, 90.0)
    assert k[0, 0] == pytest.approx(32.0)
    assert k[1, 1] == pytest.approx(32.0)
    assert (k[0, 2], k[1, 2]) == (32.0, 24.0)


def test_scale_intrinsics_maps_pixel_corners_exactly():
    k = g.intrinsics_from_fov(64, 64)
    k16 = g.scale_intrinsics(k, (64, 64), (16, 16))
    # a ray through the corner of latent cell (3, 5) is the ray through pixel corner (12, 20)
    ray_big = np.linalg.inv(k) @ np.array([12.0, 20.0, 1.0])
    ray_small = np.linalg.inv(k16) @ np.array([3.0, 5.0, 1.0])
    np.testing.assert_allclose(ray_big, ray_small)
    kt = g.scale_intrinsics(torch.as_tensor(k), (64, 64), (16, 16))
    np.testing.assert_allclose(kt.numpy(), k16)


def test_unproject_project_round_trip():
    rng = np.random.default_rng(0)
    k = torch.as_tensor(g.intrinsics_from_fov(32, 24, 75.0))
    for _ in range(5):
        pose = torch.as_tensor(random_pose(rng))
        depth = torch.as_tensor(rng.uniform(0.5, 10.0, (24, 32)))
        pts = g.unproject_depth(depth, k, pose)
        uv, z = g.project_points(pts.reshape(-1, 3), k, pose)
        grid = g.pixel_grid(24, 32, dtype=torch.float64)[..., :2].reshape(-1, 2)
        torch.testing.assert_close(uv, grid)
        torch.testing.assert_close(z, depth.reshape(-1))


def test_invert_pose_matches_matrix_inverse():
    rng = np.random.default_rng(1)
    pose = torch.as_tensor(np.stack([random_pose(rng) for _ in range(4)]))
    torch.testing.assert_close(g.invert_pose(pose), torch.linalg.inv(pose))


def test_pose_from_state_axes():
    # turning right by 90 degrees makes the optical axis point along world +x
    pose = g.pose_from_state(np.array([0, 0, 0, math.pi / 2, 0, 0]))
    np.testing.assert_allclose(pose[:3, 2], [1, 0, 0], atol=1e-12)
    # looking up tilts the optical axis toward world -y (y points down)
    pose = g.pose_from_state(np.array([0, 0, 0, 0, 0.3, 0]))
    assert pose[1, 2] < 0
    g.check_pose(pose)


def test_look_at_pose_points_the_optical_axis():
    pose = g.look_at_pose([0, 0, 0], [3, 0, 3])
    np.testing.assert_allclose(pose[:3, 2], np.array([1, 0, 1]) / math.sqrt(2))
    assert pose[1, 1] > 0.99  # camera y stays world down for a level camera
    g.check_pose(pose)


def test_splat_nearest_keeps_the_nearest_point_per_cell():
    k = torch.as_tensor(g.intrinsics_from_fov(4, 4))
    pose = torch.eye(4, dtype=torch.float64)
    pts = torch.tensor([[0.1, 0.1, 2.0], [0.1, 0.1, 1.0], [0.1, 0.1, 3.0], [0.0, 0.0, -1.0], [50.0, 0.0, 1.0]])
    cells, idx, depth = g.splat_nearest(pts, k.float(), pose.float(), 4, 4)
    assert cells.tolist() == [2 * 4 + 2]
    assert idx.tolist() == [1]
    assert depth.tolist() == [1.0]


def test_splat_with_depth_tolerance_prefers_the_point_at_the_cell_centre():
    k = torch.as_tensor(g.intrinsics_from_fov(4, 4)).float()
    pose = torch.eye(4)
    # cell (2, 2) spans x, y in [0, 0.5) at z = 1; its centre is at 0.25
    centred, off_centre, far = [0.25, 0.25, 1.0], [0.05, 0.05, 0.97], [0.25, 0.25, 1.5]
    pts = torch.tensor([off_centre, centred, far])
    cells, idx, depth = g.splat_nearest(pts, k, pose, 4, 4)
    assert idx.tolist() == [0]  # plain z-buffer: the nearest
    cells, idx, depth = g.splat_nearest(pts, k, pose, 4, 4, depth_tolerance=0.05)
    assert cells.tolist() == [2 * 4 + 2] and idx.tolist() == [1] and depth.tolist() == [1.0]
    cells, idx, _ = g.splat_nearest(pts[[0, 2]], k, pose, 4, 4, depth_tolerance=0.05)
    assert idx.tolist() == [0]  # a surface well behind never wins


def _grid_points(rows, cols, size=8, z=2.0):
    """One point at the centre of each (row, col) cell of a ``size`` grid (90-degree FOV) at depth z."""
    k = g.intrinsics_from_fov(size, size)
    uv = torch.tensor([[c + 0.5, r + 0.5] for r, c in zip(rows, cols)], dtype=torch.float64)
    xy = (uv - torch.tensor([k[0, 2], k[1, 2]])) / torch.tensor([k[0, 0], k[1, 1]]) * z
    return torch.cat([xy, torch.full((len(uv), 1), z, dtype=torch.float64)], 1).float(), torch.as_tensor(k).float()


def test_hole_filling_fills_surrounded_gaps_and_keeps_the_edge_of_memory():
    # the left five columns are full except cell (3, 2): a gap inside the surface
    rows, cols = zip(*[(r, c) for r in range(8) for c in range(5) if (r, c) != (3, 2)])
    pts, k = _grid_points(rows, cols)
    pose = torch.eye(4)
    plain, _, _ = g.splat_nearest(pts, k, pose, 8, 8, depth_tolerance=0.25)
    filled, idx, depth = g.splat_nearest(pts, k, pose, 8, 8, depth_tolerance=0.25, fill_holes=True)
    assert set(filled.tolist()) - set(plain.tolist()) == {3 * 8 + 2}, "only the gap is filled, not column 5"
    gap = filled.tolist().index(3 * 8 + 2)
    assert (rows[idx[gap]], cols[idx[gap]]) in {(2, 2), (4, 2), (3, 1), (3, 3)}, "from a side neighbour"
    assert torch.allclose(depth, torch.full_like(depth, 2.0))
    taken = torch.zeros(64, dtype=torch.bool)
    taken[3 * 8 + 2] = True  # another layer (sky) shows it: not filled
    cells, _, _ = g.splat_nearest(pts, k, pose, 8, 8, depth_tolerance=0.25, fill_holes=True, taken=taken)
    assert torch.equal(cells, plain)


def test_splat_of_several_cameras_equals_one_call_each():
    rng = np.random.default_rng(5)
    k = torch.as_tensor(g.intrinsics_from_fov(12, 10)).float()
    poses = torch.stack([torch.as_tensor(random_pose(rng)).float() for _ in range(3)])
    clouds = [torch.as_tensor(rng.uniform(-4, 4, (n, 3))).float() for n in (300, 0, 500)]
    view = torch.repeat_interleave(torch.arange(3), torch.tensor([len(c) for c in clouds]))
    taken = torch.as_tensor(rng.random(3 * 120) < 0.1)
    args = dict(depth_tolerance=0.25, fill_holes=True)
    cells, index, depth = g.splat_nearest(torch.cat(clouds), k.expand(3, 3, 3), poses, 10, 12, taken=taken, view=view,
                                          **args)
    start = 0
    for b, cloud in enumerate(clouds):
        own_taken = taken[b * 120 : (b + 1) * 120]
        one_cells, one_index, one_depth = g.splat_nearest(cloud, k, poses[b], 10, 12, taken=own_taken, **args)
        mine = (cells >= b * 120) & (cells < (b + 1) * 120)
        assert torch.equal(cells[mine] - b * 120, one_cells) and torch.equal(index[mine] - start, one_index)
        assert torch.equal(depth[mine], one_depth)
        start += len(cloud)
    assert len(cells) > 100
    with pytest.raises(ValueError, match="view must give each point's camera"):
        g.splat_nearest(torch.cat(clouds), k.expand(3, 3, 3), poses, 10, 12)


def test_hole_filling_uses_points_just_outside_the_frame():
    # columns 0-6 and a column just beyond the right edge: column 7 is a gap, not an edge
    rows, cols = zip(*[(r, c) for r in range(8) for c in (*range(7), 8)])
    pts, k = _grid_points(rows, cols)
    cells, _, _ = g.splat_nearest(pts, k, torch.eye(4), 8, 8, fill_holes=True)
    assert {r * 8 + 7 for r in range(1, 7)} <= set(cells.tolist())
    rows, cols = zip(*[(r, c) for r in range(8) for c in range(7)])  # without the outside column
    pts, k = _grid_points(rows, cols)
    cells, _, _ = g.splat_nearest(pts, k, torch.eye(4), 8, 8, fill_holes=True)
    assert not {r * 8 + 7 for r in range(8)} & set(cells.tolist()), "the edge of memory stays put"


@pytest.mark.parametrize(
    "action, expected",
    [
        (g.Action.MOVE_FORWARD, [0, 0, 0.2]),
        (g.Action.MOVE_BACKWARD, [0, 0, -0.2]),
        (g.Action.STRAFE_LEFT, [-0.2, 0, 0]),
        (g.Action.STRAFE_RIGHT, [0.2, 0, 0]),
    ],
)
def test_discrete_moves_translate_in_the_heading_frame(action, expected):
    state = np.zeros(6)
    nxt = g.apply_motion(state, g.discrete_to_continuous(action))
    np.testing.assert_allclose(nxt[:3], expected, atol=1e-12)
    # after turning right 90 degrees, forward is world +x
    turned = np.array([0, 0, 0, math.pi / 2, 0, 0])
    moved = g.apply_motion(turned, g.discrete_to_continuous(g.Action.MOVE_FORWARD))
    np.testing.assert_allclose(moved[:3], [0.2, 0, 0], atol=1e-12)


def test_walking_stays_horizontal_when_looking_down():
    state = np.array([0, 0, 0, 0.4, -0.5, 0])
    moved = g.apply_motion(state, g.discrete_to_continuous(g.Action.MOVE_FORWARD))
    assert moved[1] == 0.0
    assert np.hypot(moved[0], moved[2]) == pytest.approx(0.2)


def test_turns_and_pitch_clamp():
    rig = g.RigConfig()
    state = np.zeros(6)
    for _ in range(24):
        state = g.apply_motion(state, g.discrete_to_continuous(g.Action.TURN_RIGHT), rig)
    np.testing.assert_allclose(g.pose_from_state(state), np.eye(4), atol=1e-9)  # full circle
    for _ in range(10):
        state = g.apply_motion(state, g.discrete_to_continuous(g.Action.LOOK_UP), rig)
    assert state[4] == pytest.approx(math.radians(rig.pitch_limit_deg))
    noop = g.apply_motion(state, g.discrete_to_continuous(g.Action.NOOP), rig)
    np.testing.assert_array_equal(noop, state)


def test_bad_actions_raise():
    with pytest.raises(ValueError, match="action"):
        g.discrete_to_continuous(9)
    with pytest.raises(ValueError, match="action"):
        g.discrete_to_continuous(1.5)
    with pytest.raises(ValueError, match="motion"):
        g.apply_motion(np.zeros(6), np.array([0, 0, 2.0, 0, 0, 0]))
    with pytest.raises(ValueError, match="motion"):
        g.apply_motion(np.zeros(6), np.array([0, 0, np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="motion"):
        g.apply_motion(np.zeros(6), np.zeros(5))


def test_bad_poses_and_intrinsics_raise():
    with pytest.raises(ValueError, match="pose"):
        g.check_pose(np.eye(3))
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="rigid"):
        g.check_pose(bad)
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        g.check_pose(bad)
    bad = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="reflection"):
        g.check_pose(bad)
    with pytest.raises(ValueError, match="intrinsics"):
        g.check_intrinsics(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="fov_deg"):
        g.intrinsics_from_fov(64, 64, 180.0)
