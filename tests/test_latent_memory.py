import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mirage_gym.geometry import intrinsics_from_fov, look_at_pose, pose_from_state, scale_intrinsics, splat_nearest
from mirage_gym.memory import LatentMemoryBank, LatentSpatialMemory, static_keep_mask
from mirage_gym.memory.coverage import CoverageGrid
from mirage_gym.memory.latent import SURFACE_TOLERANCE, chunk_major_keys
from mirage_gym.scenes import LABEL_DYNAMIC, LABEL_SKY, make_scene

SIZE, GRID = 64, 16
K = intrinsics_from_fov(SIZE, SIZE)


def rgb_latents(rgb: np.ndarray) -> torch.Tensor:
    """Area-downsampled RGB as a stand-in latent grid (3, 16, 16)."""
    x = torch.as_tensor(rgb).permute(2, 0, 1).float()[None] / 255.0
    return F.avg_pool2d(x, SIZE // GRID)[0]


def write_render(memory, scene, pose, **kwargs):
    r = scene.render(pose, SIZE, SIZE)
    keep = static_keep_mask(r.depth, r.labels)
    memory.write(rgb_latents(r.rgb), r.depth, pose, r.intrinsics, keep_mask=keep, **kwargs)
    return r


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_same_pose_read_reproduces_the_written_grid(dtype):
    """Exactly, up to the storage rounding (float16 by default); reads are float32."""
    scene = make_scene(3, kind="indoor")
    memory = LatentSpatialMemory(3, feature_dtype=dtype)
    r = write_render(memory, scene, np.eye(4))
    out = memory.read(np.eye(4), K, (GRID, GRID), image_size=(SIZE, SIZE))
    valid = out.mask[0] > 0
    assert valid.float().mean() >= 0.95 and out.features.dtype == torch.float32
    assert torch.equal(out.features[:, valid], rgb_latents(r.rgb).to(dtype).float()[:, valid])


def test_moved_pose_read_agrees_with_the_true_render():
    """Memory read at a new pose matches that pose's true render on >= 90% of covered cells.

    Aggregated over scenes: a cell's footprint shifts between views, so on strongly
    textured surfaces a few cells differ by more than the tolerance.
    """
    agree, covered = [], []
    for seed in range(8):
        scene = make_scene(seed)
        memory = LatentSpatialMemory(3, voxel_size=0.02)
        # look around from the start so the memory holds a wide view, then step aside
        for yaw in np.radians([-30, 0, 30]):
            write_render(memory, scene, pose_from_state(np.array([0, 0, 0, yaw, 0, 0])))
        target = pose_from_state(np.array([0.15, 0.0, 0.2, math.radians(10), math.radians(5), 0]))
        truth = scene.render(target, SIZE, SIZE)
        out = memory.read(target, K, (GRID, GRID), image_size=(SIZE, SIZE))
        valid = out.mask[0] > 0
        err = (out.features - rgb_latents(truth.rgb)).abs().amax(dim=0)[valid]
        agree.append(float((err < 0.1).float().mean()))
        covered.append(float(valid.float().mean()))
    assert min(covered) > 0.6
    assert np.mean(agree) >= 0.9 and min(agree) >= 0.75, agree


def test_sky_goes_to_the_sky_dome_and_moving_objects_nowhere():
    scene = make_scene(4, kind="outdoor", dynamic_objects=3)
    seen_sky = seen_dynamic = seen_horizon = 0
    for yaw in np.radians(np.arange(0, 360, 30)):
        pose = pose_from_state(np.array([0, 0, 0, yaw, 0.2, 0]))
        memory = LatentSpatialMemory(3, voxel_size=0.01)
        r = write_render(memory, scene, pose)
        labels = torch.as_tensor(r.labels).long()
        sky_share = F.avg_pool2d((labels == LABEL_SKY).float()[None], SIZE // GRID)[0]
        dynamic = F.max_pool2d((labels == LABEL_DYNAMIC).float()[None], SIZE // GRID)[0] > 0
        seen_sky += int((sky_share > 0.5).sum())
        seen_dynamic += int(dynamic.sum())
        seen_horizon += int(((sky_share > 0) & (sky_share <= 0.5) & ~dynamic).sum())
        # one 3D point per cell that is at least half surface and has nothing moving in it
        assert len(memory) == int((~dynamic & (sky_share <= 0.5)).sum())
        assert len(memory.sky) == int((~dynamic & (sky_share > 0.5)).sum())
        assert torch.isfinite(memory.state_dict()["xyz"]).all()
        out = memory.read(pose, K, (GRID, GRID), image_size=(SIZE, SIZE))
        valid = out.mask[0] > 0
        assert valid[~dynamic].all(), "every cell free of moving objects is remembered"
        shows_sky = valid & ~torch.isfinite(out.depth[0])
        assert torch.equal(shows_sky[~dynamic], (sky_share > 0.5)[~dynamic]), "sky comes back from the dome"
    assert seen_sky and seen_dynamic and seen_horizon, "the scene must show sky, horizon and dynamic objects"


def test_writing_the_same_view_100_times_does_not_grow_memory():
    scene = make_scene(7)
    memory = LatentSpatialMemory(3)
    r = write_render(memory, scene, np.eye(4))
    n, held = len(memory), memory.stats()["bytes"]
    keep = static_keep_mask(r.depth, r.labels)
    for _ in range(100):
        memory.write(rgb_latents(r.rgb), r.depth, np.eye(4), r.intrinsics, keep_mask=keep)
    assert len(memory) == n and memory.stats()["bytes"] == held
    # xyz float32, latent float16, recency int32, confidence float16, index key int64 + slot int32
    assert memory.bytes_per_entry == 12 + 3 * 2 + 4 + 2 + 8 + 4
    assert n * memory.bytes_per_entry < held < n * (memory.bytes_per_entry + 32)  # + the chunk table


def test_first_confident_write_wins_and_weak_entries_are_upgraded():
    memory = LatentSpatialMemory(2)
    depth = torch.full((8, 8), 2.0)
    memory.write(torch.zeros(2, 4, 4), depth, np.eye(4), intrinsics_from_fov(8, 8), confidence=1.0)
    memory.write(torch.ones(2, 4, 4), depth, np.eye(4), intrinsics_from_fov(8, 8), confidence=1.0)
    out = memory.read(np.eye(4), intrinsics_from_fov(8, 8), (4, 4), image_size=(8, 8))
    assert out.features.abs().max() == 0  # the seed view is never degraded
    weak = LatentSpatialMemory(2)
    weak.write(torch.zeros(2, 4, 4), depth, np.eye(4), intrinsics_from_fov(8, 8), confidence=0.2)
    weak.write(torch.ones(2, 4, 4), depth, np.eye(4), intrinsics_from_fov(8, 8), confidence=0.9)
    out = weak.read(np.eye(4), intrinsics_from_fov(8, 8), (4, 4), image_size=(8, 8))
    assert torch.all(out.features == 1)


def test_capacity_cap_evicts_the_least_recently_seen():
    scene = make_scene(1, kind="indoor")
    memory = LatentSpatialMemory(3, voxel_size=0.01, capacity=600)
    first = pose_from_state(np.array([0, 0, 0, 0, 0, 0]))
    for i, yaw in enumerate(np.radians(np.arange(0, 360, 20))):
        write_render(memory, scene, pose_from_state(np.array([0, 0, 0, yaw, 0, 0])))
        assert len(memory) <= 600
        if i == 0:
            start_view = memory.read(first, K, (GRID, GRID), image_size=(SIZE, SIZE), touch=False).coverage
    # keep looking at the last view: the first view's points are the oldest and go first
    assert start_view > 0.9
    assert memory.read(first, K, (GRID, GRID), image_size=(SIZE, SIZE), touch=False).coverage < start_view


def test_state_dict_round_trip_is_identical():
    scene = make_scene(2)
    memory = LatentSpatialMemory(3, capacity=5000)
    for yaw in (0.0, 0.5, 1.0):
        write_render(memory, scene, pose_from_state(np.array([0, 0, 0, yaw, 0, 0])))
    copy = LatentSpatialMemory(3, capacity=5000)
    copy.load_state_dict(memory.state_dict())
    for a, b in zip(memory.state_dict().values(), copy.state_dict().values()):
        assert torch.equal(a, b)
    pose = pose_from_state(np.array([0.1, 0, 0.1, 0.3, 0, 0]))
    ra = memory.read(pose, K, (GRID, GRID), image_size=(SIZE, SIZE))
    rb = copy.read(pose, K, (GRID, GRID), image_size=(SIZE, SIZE))
    assert torch.equal(ra.features, rb.features) and torch.equal(ra.depth, rb.depth)
    # both continue identically
    write_render(memory, scene, pose)
    write_render(copy, scene, pose)
    assert torch.equal(memory.state_dict()["keys"], copy.state_dict()["keys"])


def test_corrupt_state_is_refused_and_leaves_memory_untouched():
    memory = LatentSpatialMemory(2)
    memory.write(torch.zeros(2, 4, 4), torch.full((8, 8), 2.0), np.eye(4), intrinsics_from_fov(8, 8))
    state = memory.state_dict()
    before = len(memory)
    bad = dict(state, keys=state["keys"] + 1)
    with pytest.raises(ValueError, match="keys"):
        memory.load_state_dict(bad)
    with pytest.raises(ValueError, match="features"):
        memory.load_state_dict(dict(state, features=state["features"][:, :1]))
    with pytest.raises(ValueError, match="missing"):
        memory.load_state_dict({"xyz": state["xyz"]})
    assert len(memory) == before


@pytest.mark.parametrize("read_first", [False, True])
def test_reprojection_residual_check_rejects_things_in_front_of_memory(read_first):
    """Also when the check reuses the world's read at the same pose (``read_first``)."""
    memory = LatentSpatialMemory(2)
    k8 = intrinsics_from_fov(8, 8)
    if read_first:  # a stale read of the empty memory must not be reused
        memory.read(np.eye(4), k8, (4, 4), image_size=(8, 8))
    memory.write(torch.zeros(2, 4, 4), torch.full((8, 8), 4.0), np.eye(4), k8)
    n = len(memory)
    if read_first:
        assert memory.read(np.eye(4), k8, (4, 4), image_size=(8, 8)).coverage == 1
    intruder = torch.full((8, 8), 4.0)
    intruder[:4, :4] = 1.0  # something walked in front of the wall
    added = memory.write(torch.ones(2, 4, 4), intruder, np.eye(4), k8, reject_closer_than_memory=0.2).added
    assert added == 0 and len(memory) == n


def test_read_culls_points_behind_the_camera():
    memory = LatentSpatialMemory(2)
    memory.write(torch.ones(2, 4, 4), torch.full((8, 8), 2.0), np.eye(4), intrinsics_from_fov(8, 8))
    behind = look_at_pose([0, 0, 0], [0, 0, -1])
    assert memory.read(behind, intrinsics_from_fov(8, 8), (4, 4), image_size=(8, 8)).coverage == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"features": torch.zeros(2, 4, 4)}, "features"),
        ({"features": torch.full((3, 4, 4), float("nan"))}, "features"),
        ({"depth": torch.full((8,), 1.0)}, "depth"),
        ({"depth": -torch.ones(8, 8)}, "depth"),
        ({"depth": torch.full((8, 8), float("nan"))}, "depth"),
        ({"depth": torch.ones(9, 9)}, "multiple"),
        ({"pose": np.full((4, 4), np.nan)}, "pose"),
        ({"pose": np.diag([2.0, 1, 1, 1])}, "pose"),
        ({"intrinsics": np.eye(4)}, "intrinsics"),
        ({"keep_mask": np.ones((4, 4), bool)}, "keep_mask"),
    ],
)
def test_bad_write_input_raises_value_error(kwargs, match):
    memory = LatentSpatialMemory(3)
    args = {
        "features": torch.zeros(3, 4, 4),
        "depth": torch.ones(8, 8),
        "pose": np.eye(4),
        "intrinsics": intrinsics_from_fov(8, 8),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        memory.write(**args)
    assert len(memory) == 0


def test_bad_read_input_raises_value_error():
    memory = LatentSpatialMemory(3)
    with pytest.raises(ValueError, match="grid_size"):
        memory.read(np.eye(4), K, (0, 16))
    with pytest.raises(ValueError, match="pose"):
        memory.read(np.eye(3), K, (16, 16))
    with pytest.raises(ValueError, match="channels"):
        LatentSpatialMemory(0)


def test_skipped_cells_are_not_written_but_count_as_seen():
    memory = LatentSpatialMemory(2)
    k8 = intrinsics_from_fov(8, 8)
    skip = torch.zeros(4, 4, dtype=torch.bool)
    skip[:2] = True
    result = memory.write(torch.ones(2, 4, 4), torch.full((8, 8), 2.0), np.eye(4), k8, skip_cells=skip)
    assert result.added == 8 and result.static_xyz.shape == (16, 3)
    with pytest.raises(ValueError, match="skip_cells"):
        memory.write(torch.ones(2, 4, 4), torch.full((8, 8), 2.0), np.eye(4), k8, skip_cells=torch.zeros(2, 2))


def random_pose(rng: np.random.Generator) -> np.ndarray:
    eye = rng.uniform(-3, 3, 3)
    return look_at_pose(eye, eye + rng.normal(size=3), up=rng.normal(size=3))


@pytest.mark.parametrize("voxel_size", [0.01, 0.05, 0.2])
def test_culled_read_and_distance_equal_brute_force(voxel_size):
    """Chunk culling changes no readout bit, no touched entry and no distance.

    The reference projects every entry, in voxel-key order (equal depths go to the lower key).
    """
    rng = np.random.default_rng(int(voxel_size * 100))
    memory = LatentSpatialMemory(3, voxel_size=voxel_size)
    for seed in range(3):  # procedural views, then scattered random depth across many chunks
        write_render(memory, make_scene(seed), random_pose(rng))
    for _ in range(3):
        depth = torch.as_tensor(rng.uniform(0.1, 30.0, (SIZE, SIZE)), dtype=torch.float32)
        memory.write(torch.as_tensor(rng.normal(size=(3, GRID, GRID)), dtype=torch.float32), depth, random_pose(rng), K)
    skewed = np.array([[9.0, 0.7, 7.3], [0.0, 11.0, 5.1], [0.0, 0.0, 1.0]])
    culled = 0
    for i in range(40):
        pose = random_pose(rng)
        k, (h, w) = (scale_intrinsics(K, (SIZE, SIZE), (GRID, GRID)), (GRID, GRID)) if i % 2 else (skewed, (12, 20))
        before = memory.state_dict()
        order = torch.argsort(chunk_major_keys(before["xyz"], voxel_size)[0])
        memory.clock += 1  # so touched entries show
        out = memory.read(pose, k, (h, w))
        sky_cells, sky_features = memory.sky.read(torch.as_tensor(pose), torch.as_tensor(k), (h, w))
        taken = torch.isin(torch.arange(h * w), sky_cells)
        cells, index, depth = splat_nearest(
            before["xyz"][order], torch.as_tensor(k).float(), torch.as_tensor(pose).float(), h, w,
            depth_tolerance=SURFACE_TOLERANCE, fill_holes=True, taken=taken,
        )
        points = order[index]
        features = torch.zeros(h * w, 3)
        features[sky_cells] = sky_features  # remembered sky shows where no surface does
        features[cells] = before["features"][points].float()
        assert torch.equal(out.features, features.T.reshape(3, h, w))
        assert torch.equal(out.mask.flatten() > 0, torch.isin(torch.arange(h * w), torch.cat([cells, sky_cells])))
        assert torch.equal(out.depth.flatten()[cells], depth)
        touched = torch.nonzero(memory.state_dict()["last_seen"] == memory.clock).flatten()
        assert torch.equal(touched, torch.unique(points))  # a point may fill a hole too
        culled += len(memory.slots_in_view(pose, k, h, w)) < len(memory)
        p = rng.uniform(-5, 5, 3)
        assert memory.distance_to(p) == float(((before["xyz"] - torch.as_tensor(p).float()) ** 2).sum(dim=1).min().sqrt())
    assert culled >= 20, "the test must exercise culling"


def test_sky_is_remembered_by_direction_from_any_position():
    memory = LatentSpatialMemory(3)
    features = torch.randn(3, GRID, GRID)
    memory.write(features, torch.full((SIZE, SIZE), math.inf), np.eye(4), K)
    assert len(memory) == 0 and len(memory.sky) == GRID * GRID
    elsewhere = pose_from_state(np.array([3.0, -1.0, 5.0, 0.0, 0.0, 0.0]))  # moved, same heading
    out = memory.read(elsewhere, K, (GRID, GRID), image_size=(SIZE, SIZE))
    assert out.mask.all() and not torch.isfinite(out.depth).any()
    torch.testing.assert_close(out.features, features.half().float())
    behind = memory.read(pose_from_state(np.array([0, 0, 0, math.pi, 0, 0])), K, (GRID, GRID), image_size=(SIZE, SIZE))
    assert not behind.mask.any(), "sky never seen is not made up"


def test_geometry_in_front_of_remembered_sky_hides_it():
    memory = LatentSpatialMemory(3)
    memory.write(torch.zeros(3, GRID, GRID), torch.full((SIZE, SIZE), math.inf), np.eye(4), K)
    wall = torch.full((SIZE, SIZE), math.inf)
    wall[:, : SIZE // 2] = 2.0  # the left half of a second view is a wall
    memory.write(torch.ones(3, GRID, GRID), wall, np.eye(4), K)
    out = memory.read(np.eye(4), K, (GRID, GRID), image_size=(SIZE, SIZE))
    assert (out.features[:, :, : GRID // 2] == 1).all() and (out.features[:, :, GRID // 2 :] == 0).all()
    assert torch.isfinite(out.depth[0, :, : GRID // 2]).all() and not torch.isfinite(out.depth[0, :, GRID // 2 :]).any()


def test_a_cell_at_the_horizon_is_remembered_at_its_surface_depth():
    depth = torch.full((SIZE, SIZE), math.inf)
    depth[2:4, :] = 3.0  # cell row 0: half surface at 3 m, half sky
    depth[7, :] = 5.0  # cell row 1: a quarter surface: mostly sky
    memory = LatentSpatialMemory(3)
    memory.write(torch.randn(3, GRID, GRID), depth, np.eye(4), K)
    out = memory.read(np.eye(4), K, (GRID, GRID), image_size=(SIZE, SIZE))
    torch.testing.assert_close(out.depth[0, 0], torch.full((GRID,), 3.0))
    assert not torch.isfinite(out.depth[0, 1:]).any() and out.mask.all()


def test_sky_survives_a_state_round_trip_and_old_states_load_without_it():
    memory = LatentSpatialMemory(3)
    write_render(memory, make_scene(4, kind="outdoor"), np.eye(4))
    assert len(memory.sky) > 0
    state = memory.state_dict()
    copy = LatentSpatialMemory(3)
    copy.load_state_dict(state)
    a, b = (m.read(np.eye(4), K, (GRID, GRID), image_size=(SIZE, SIZE)) for m in (memory, copy))
    assert torch.equal(a.features, b.features) and torch.equal(a.mask, b.mask) and torch.equal(a.depth, b.depth)
    old = {k: v for k, v in state.items() if not k.startswith("sky_")}
    copy.load_state_dict(old)
    assert len(copy.sky) == 0 and len(copy) == len(memory)
    bad = dict(state, sky_directions=state["sky_directions"] * 2)
    with pytest.raises(ValueError, match="sky_directions"):
        copy.load_state_dict(bad)
    assert len(copy.sky) == 0, "a refused state changes nothing"


def _filled_memories(n: int, rng: np.random.Generator) -> list[LatentSpatialMemory]:
    """``n`` memories of different procedural views plus sky, one of them empty."""
    memories = [LatentSpatialMemory(3) for _ in range(n)]
    for i, memory in enumerate(memories[1:]):
        write_render(memory, make_scene(i, kind="outdoor" if i % 2 else "indoor"), random_pose(rng))
        write_render(memory, make_scene(i), np.eye(4))
    return memories


def _bank_of(memories: list[LatentSpatialMemory]) -> LatentMemoryBank:
    """A bank whose world ``b`` holds what single-world memory ``b`` holds."""
    bank = LatentMemoryBank(len(memories), memories[0].channels)
    for i, memory in enumerate(memories):
        bank.load_state_dict(i, memory.state_dict())
    return bank


def _states_equal(bank: LatentMemoryBank, memories: list[LatentSpatialMemory]) -> bool:
    for i, memory in enumerate(memories):
        mine, theirs = bank.state_dict(i), memory.state_dict()
        if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
            return False
    return True


def test_bank_read_equals_each_single_world_read():
    """One splat for a bank of B worlds gives every world exactly what a single-world
    memory holding the same gives, touches included."""
    rng = np.random.default_rng(7)
    alone = _filled_memories(4, rng)
    bank = _bank_of(alone)
    for _ in range(5):
        poses = [pose_from_state(np.array([*rng.uniform(-0.5, 0.5, 3), *rng.uniform(-1, 1, 3) * [3, 0.5, 0.2]]))
                 for _ in alone]
        for i, m in enumerate(alone):
            m.clock += 1
            bank.tick(i, bank.tick(i) + 1)
        out = bank.read(poses, [K] * 4, (GRID, GRID), image_size=(SIZE, SIZE))
        assert out.features.shape == (4, 3, GRID, GRID) and out.mask.shape == out.depth.shape == (4, 1, GRID, GRID)
        for i, (memory, pose) in enumerate(zip(alone, poses)):
            ref = memory.read(pose, K, (GRID, GRID), image_size=(SIZE, SIZE))
            for a, b in ((out[i].features, ref.features), (out[i].mask, ref.mask), (out[i].depth, ref.depth),
                         (out[i].offset, ref.offset)):
                assert torch.equal(a, b)
    assert _states_equal(bank, alone)
    # a read of some worlds only is the same as theirs in a read of all
    some = bank.read([poses[2], poses[0]], [K] * 2, (GRID, GRID), image_size=(SIZE, SIZE), touch=False, worlds=[2, 0])
    assert torch.equal(some.features[0], out.features[2]) and torch.equal(some.features[1], out.features[0])


def test_bank_write_equals_each_single_world_write():
    rng = np.random.default_rng(3)
    alone = _filled_memories(3, rng)
    bank = _bank_of(alone)
    renders = [make_scene(10 + i).render(random_pose(rng), SIZE, SIZE) for i in range(3)]
    features = torch.stack([rgb_latents(r.rgb) for r in renders])
    depth = torch.stack([torch.as_tensor(r.depth) for r in renders])
    keep = torch.stack([static_keep_mask(r.depth, r.labels) for r in renders])
    skip = torch.as_tensor(rng.random((3, GRID, GRID)) < 0.2)
    confidence = torch.full((3, GRID, GRID), 0.75)
    poses = [r.pose for r in renders]
    readout = bank.read(poses, [K] * 3, (GRID, GRID), image_size=(SIZE, SIZE), touch=False)
    results = bank.write(features, depth, poses, [K] * 3, keep, confidence, readout=readout, residual_tolerance=0.25,
                         skip_cells=skip)
    for i, memory in enumerate(alone):
        # the single-world write reads memory itself when no readout is given: the same
        ref = memory.write(features[i], depth[i], poses[i], K, keep_mask=keep[i], confidence=0.75,
                           reject_closer_than_memory=0.25, skip_cells=skip[i])
        assert results[i].added == ref.added and torch.equal(results[i].static_xyz, ref.static_xyz)
    assert _states_equal(bank, alone)


def test_bank_calls_refuse_mismatched_input():
    bank = LatentMemoryBank(2, 3)
    with pytest.raises(ValueError, match="one pose and one intrinsics per world"):
        bank.read([np.eye(4)], [K, K], (GRID, GRID))
    with pytest.raises(ValueError, match="pose must have shape"):
        bank.read([np.eye(4), np.eye(3)], [K, K], (GRID, GRID))
    with pytest.raises(ValueError, match="worlds must be indices"):
        bank.read([np.eye(4)], [K], (GRID, GRID), worlds=[2])
    with pytest.raises(ValueError, match="features must have shape"):
        bank.write(torch.zeros(2, 4, GRID, GRID), torch.ones(2, SIZE, SIZE), [np.eye(4)] * 2, [K] * 2,
                   torch.ones(2, SIZE, SIZE, dtype=torch.bool), torch.ones(2, GRID, GRID))
    with pytest.raises(ValueError, match="readout must be a read"):
        bank.write(torch.zeros(2, 3, GRID, GRID), torch.ones(2, SIZE, SIZE), [np.eye(4)] * 2, [K] * 2,
                   torch.ones(2, SIZE, SIZE, dtype=torch.bool), torch.ones(2, GRID, GRID),
                   readout=bank.read([np.eye(4)], [K], (GRID, GRID), worlds=[0]), residual_tolerance=0.25)


def test_coverage_grid_counts_each_voxel_once_and_stays_sorted():
    grid = CoverageGrid(voxel_size=0.5)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(6):
        xyz = torch.as_tensor(rng.uniform(-3, 3, (200, 3))).float()
        keys = {tuple(v) for v in np.floor(xyz.numpy() / 0.5).astype(int).tolist()}
        assert grid.add(xyz) == len(keys - seen)
        seen |= keys
    assert len(grid) == len(seen) and torch.equal(grid.keys, torch.sort(torch.unique(grid.keys)).values)
    assert grid.contains(torch.tensor([[0.1, 0.1, 0.1]])).item() == ((0, 0, 0) in seen)


def test_bank_distances_equal_each_single_world():
    rng = np.random.default_rng(11)
    memories = _filled_memories(4, rng)  # the first is empty
    points = rng.uniform(-4, 4, (4, 3))
    distances = _bank_of(memories).distances(points)
    assert distances == [m.distance_to(p) for m, p in zip(memories, points)]
    assert math.isinf(distances[0]) and all(math.isfinite(d) for d in distances[1:])


def test_landing_offsets_say_where_in_its_cell_each_point_projects():
    """A wall 4 m ahead, written from the origin, then read from 0.15 m to the right: its
    projection moves 0.3 of a cell (focal 8 cells at 90 degrees) to the left. Every cell
    showing its own point reports that offset; at the written pose every offset is zero."""
    memory = LatentSpatialMemory(3)
    depth = np.full((SIZE, SIZE), 4.0, dtype=np.float32)
    memory.write(torch.rand(3, GRID, GRID), depth, np.eye(4), K)
    same = memory.read(np.eye(4), K, (GRID, GRID), image_size=(SIZE, SIZE))
    assert same.offset.shape == (2, GRID, GRID)
    assert same.offset.abs().max() < 1e-4
    moved = np.eye(4)
    moved[0, 3] = 0.15
    out = memory.read(moved, K, (GRID, GRID), image_size=(SIZE, SIZE))
    inner = out.mask[0, :, :-1] > 0  # the last column is a hole filled from its neighbour
    assert inner.float().mean() > 0.9
    np.testing.assert_allclose(out.offset[0, :, :-1][inner].numpy(), -0.3, atol=1e-3)
    np.testing.assert_allclose(out.offset[1][out.mask[0] > 0].numpy(), 0.0, atol=1e-3)
