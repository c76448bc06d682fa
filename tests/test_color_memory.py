"""Behaviour of the color point-cloud baseline (Voyager / Spatia-style RGB memory)."""

import inspect
import math

import numpy as np
import pytest
import torch

from mirage_gym.geometry import intrinsics_from_fov, pose_from_state
from mirage_gym.memory import ColorPointCloudMemory, LatentSpatialMemory, MemoryReadout
from mirage_gym.memory.latent import WriteResult

SIZE = 48
K = intrinsics_from_fov(SIZE, SIZE)


def frame(seed: int = 0, sky_rows: int = 8):
    """A textured slanted wall 2-4 m away with a band of sky at the top: (rgb (3,H,W), depth)."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(3, SIZE, SIZE, generator=g)
    cols = torch.arange(SIZE, dtype=torch.float32)
    depth = (2.0 + 2.0 * cols / SIZE).expand(SIZE, SIZE).clone()
    depth[:sky_rows] = math.inf
    return rgb, depth


def test_same_pose_read_reproduces_the_image_where_valid():
    rgb, depth = frame()
    for dedup in (None, 0.01):
        memory = ColorPointCloudMemory(dedup_voxel_size=dedup)
        memory.write(rgb, depth, np.eye(4), K)
        out = memory.read(np.eye(4), K, (SIZE, SIZE))
        assert isinstance(out, MemoryReadout)
        assert out.features.shape == (3, SIZE, SIZE) and out.mask.shape == out.depth.shape == (1, SIZE, SIZE)
        valid = out.mask[0] > 0
        finite = torch.isfinite(depth)
        assert not valid[~finite].any(), "sky must never be written"
        # every pixel is its own point (voxels of 1 cm are finer than a pixel's footprint here)
        assert torch.equal(valid, finite)
        # colours round-trip through uint8 storage
        assert (out.features[:, valid] - rgb[:, valid]).abs().max() <= 0.5 / 255 + 1e-6
        torch.testing.assert_close(out.depth[0][valid], depth[valid])
        assert (out.features[:, ~valid] == 0).all() and torch.isinf(out.depth[0][~valid]).all()


def test_read_at_a_moved_pose_lands_points_where_the_geometry_says():
    """A fronto-parallel wall at 3 m seen after a sideways step: a shifted copy of the image."""
    rgb = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    depth = torch.full((SIZE, SIZE), 3.0)
    memory = ColorPointCloudMemory()
    memory.write(rgb, depth, np.eye(4), K)
    shift_px = 4
    dx = shift_px * 3.0 / K[0, 0]  # metres that move the wall by exactly 4 pixels at 3 m
    moved = pose_from_state(np.array([dx, 0, 0, 0, 0, 0]))
    out = memory.read(moved, K, (SIZE, SIZE))
    assert (out.mask[0, :, -shift_px:] == 0).all()
    assert (out.mask[0, :, : SIZE - shift_px] == 1).all()
    torch.testing.assert_close(out.features[:, :, : SIZE - shift_px], rgb[:, :, shift_px:], atol=0.5 / 255 + 1e-6, rtol=0)


def test_read_at_another_grid_scales_the_intrinsics():
    rgb, depth = frame()
    memory = ColorPointCloudMemory()
    memory.write(rgb, depth, np.eye(4), K)
    half = memory.read(np.eye(4), K, (SIZE // 2, SIZE // 2), image_size=(SIZE, SIZE))
    assert half.features.shape == (3, SIZE // 2, SIZE // 2)
    assert half.mask[0, :4].sum() == 0 and half.mask[0, 4:].all()  # sky band is 8 px -> 4 cells


def test_z_buffer_keeps_the_nearest_point():
    rgb_far = torch.zeros(3, SIZE, SIZE)
    rgb_near = torch.ones(3, SIZE, SIZE)
    memory = ColorPointCloudMemory()
    memory.write(rgb_far, torch.full((SIZE, SIZE), 5.0), np.eye(4), K)
    memory.write(rgb_near, torch.full((SIZE, SIZE), 2.0), np.eye(4), K)
    out = memory.read(np.eye(4), K, (SIZE, SIZE))
    assert out.mask.all() and (out.features == 1).all() and (out.depth == 2.0).all()


def test_appending_grows_with_every_write_and_dedup_does_not():
    rgb, depth = frame()
    kept = int(torch.isfinite(depth).sum())
    append = ColorPointCloudMemory()
    dedup = ColorPointCloudMemory(dedup_voxel_size=0.2)  # coarser than a pixel: voxels merge pixels
    sizes, dedup_sizes = [], []
    for _ in range(3):
        assert append.write(rgb, depth, np.eye(4), K).added == kept
        dedup.write(rgb, depth, np.eye(4), K)
        sizes.append(len(append))
        dedup_sizes.append(len(dedup))
    assert sizes == [kept, 2 * kept, 3 * kept]
    assert dedup_sizes[0] == dedup_sizes[1] == dedup_sizes[2] < kept
    assert dedup.write(rgb, depth, np.eye(4), K).added == 0
    # first write wins: a later write of other colours does not change what is stored
    before = dedup.read(np.eye(4), K, (SIZE, SIZE))
    dedup.write(1.0 - rgb, depth, np.eye(4), K)
    after = dedup.read(np.eye(4), K, (SIZE, SIZE))
    assert torch.equal(before.features, after.features)
    # a new view adds points to both
    turned = pose_from_state(np.array([0, 0, 0, math.radians(60), 0, 0]))
    assert dedup.write(rgb, depth, turned, K).added > 0


def test_stats_count_honest_bytes():
    rgb, depth = frame()
    append = ColorPointCloudMemory()
    dedup = ColorPointCloudMemory(dedup_voxel_size=0.05)
    assert append.stats() == {"points": 0, "bytes": 0, "voxels": 0}
    for m in (append, dedup):
        m.write(rgb, depth, np.eye(4), K)
        m.write(rgb, depth, np.eye(4), K)
    a, d = append.stats(), dedup.stats()
    assert a["points"] == len(append) and a["bytes"] == a["points"] * (12 + 3)
    assert d["points"] == len(dedup) == d["voxels"] and d["bytes"] == d["points"] * (12 + 3 + 8)
    assert 0 < a["voxels"] <= a["points"] // 2  # repeated writes fill no new voxel
    # stored tensors really are that size
    sd = append.state_dict()
    assert sd["xyz"].dtype == torch.float32 and sd["rgb"].dtype == torch.uint8
    assert sd["xyz"].nbytes + sd["rgb"].nbytes == a["bytes"]


def test_state_round_trip():
    rgb, depth = frame()
    turned = pose_from_state(np.array([0.3, 0, 0.2, math.radians(30), 0, 0]))
    for dedup in (None, 0.03):
        memory = ColorPointCloudMemory(dedup_voxel_size=dedup)
        memory.write(rgb, depth, np.eye(4), K)
        memory.write(*frame(1), turned, K)
        copy = ColorPointCloudMemory(dedup_voxel_size=dedup)
        copy.load_state_dict(memory.state_dict())
        assert len(copy) == len(memory) and copy.stats() == memory.stats() and copy.clock == memory.clock
        probe = pose_from_state(np.array([0.1, 0, -0.3, math.radians(10), 0, 0]))
        a, b = memory.read(probe, K, (SIZE, SIZE)), copy.read(probe, K, (SIZE, SIZE))
        for x, y in zip((a.features, a.mask, a.depth), (b.features, b.mask, b.depth)):
            assert torch.equal(x, y)
        # both keep behaving the same after the round trip
        assert memory.write(*frame(2), probe, K).added == copy.write(*frame(2), probe, K).added
        assert len(copy) == len(memory)
    memory.clear()
    assert len(memory) == 0 and memory.read(np.eye(4), K, (SIZE, SIZE)).mask.sum() == 0


def test_load_rejects_bad_state():
    memory = ColorPointCloudMemory(dedup_voxel_size=0.05)
    good = ColorPointCloudMemory()
    rgb, depth = frame()
    good.write(rgb, depth, np.eye(4), K)
    good.write(rgb, depth, np.eye(4), K)
    state = good.state_dict()
    with pytest.raises(ValueError, match="missing"):
        memory.load_state_dict({"xyz": state["xyz"]})
    with pytest.raises(ValueError, match="rgb"):
        memory.load_state_dict({**state, "rgb": state["rgb"][:-1]})
    with pytest.raises(ValueError, match="xyz"):
        memory.load_state_dict({**state, "xyz": state["xyz"][:, :2]})
    bad = state["xyz"].clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        memory.load_state_dict({**state, "xyz": bad})
    with pytest.raises(ValueError, match="voxel"):  # duplicates cannot be loaded into a dedup memory
        memory.load_state_dict(state)
    assert len(memory) == 0  # untouched by the failed loads


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"features": torch.rand(3, SIZE, SIZE + 1)}, "features"),
        ({"features": torch.rand(4, SIZE, SIZE)}, "features"),
        ({"features": torch.rand(3, SIZE, SIZE) * 2}, "features"),
        ({"features": torch.full((3, SIZE, SIZE), math.nan)}, "features"),
        ({"features": "red"}, "features"),
        ({"depth": torch.full((SIZE, SIZE), -1.0)}, "depth"),
        ({"depth": torch.full((SIZE, SIZE), math.nan)}, "depth"),
        ({"depth": torch.ones(2, SIZE, SIZE)}, "depth"),
        ({"pose": np.eye(3)}, "pose"),
        ({"pose": np.diag([1.0, 1.0, -1.0, 1.0])}, "pose"),
        ({"intrinsics": np.eye(4)}, "intrinsics"),
        ({"intrinsics": -K}, "intrinsics"),
        ({"keep_mask": torch.ones(SIZE, SIZE - 1, dtype=torch.bool)}, "keep_mask"),
        ({"confidence": torch.ones(3, 3)}, "confidence"),
        ({"confidence": 2.0}, "confidence"),
    ],
)
def test_bad_write_input_raises_value_error_naming_the_argument(kwargs, match):
    rgb, depth = frame()
    args = {"features": rgb, "depth": depth, "pose": np.eye(4), "intrinsics": K, **kwargs}
    memory = ColorPointCloudMemory()
    with pytest.raises(ValueError, match=match):
        memory.write(**args)
    assert len(memory) == 0


def test_bad_read_input_and_config_raise_value_error():
    memory = ColorPointCloudMemory()
    with pytest.raises(ValueError, match="grid_size"):
        memory.read(np.eye(4), K, (0, SIZE))
    with pytest.raises(ValueError, match="grid_size"):
        memory.read(np.eye(4), K, "big")
    with pytest.raises(ValueError, match="image_size"):
        memory.read(np.eye(4), K, (SIZE, SIZE), image_size=(SIZE,))
    with pytest.raises(ValueError, match="pose"):
        memory.read(np.full((4, 4), math.inf), K, (SIZE, SIZE))
    with pytest.raises(ValueError, match="intrinsics"):
        memory.read(np.eye(4), np.zeros((3, 3)), (SIZE, SIZE))
    with pytest.raises(ValueError, match="dedup_voxel_size"):
        ColorPointCloudMemory(dedup_voxel_size=0.0)


def test_keep_mask_and_uint8_features():
    rgb, depth = frame()
    keep = torch.ones(SIZE, SIZE, dtype=torch.bool)
    keep[:, : SIZE // 2] = False
    memory = ColorPointCloudMemory()
    result = memory.write((rgb * 255).round().to(torch.uint8), depth, np.eye(4), K, keep_mask=keep)
    assert result.added == result.static_xyz.shape[0] == int((keep & torch.isfinite(depth)).sum())
    out = memory.read(np.eye(4), K, (SIZE, SIZE))
    assert torch.equal(out.mask[0] > 0, keep & torch.isfinite(depth))


def test_same_interface_as_the_latent_memory():
    for name in ("write", "read", "stats", "state_dict", "load_state_dict", "clear", "__len__"):
        assert callable(getattr(ColorPointCloudMemory, name)) and callable(getattr(LatentSpatialMemory, name))
    read = lambda cls: list(inspect.signature(cls.read).parameters)  # noqa: E731
    assert read(ColorPointCloudMemory) == read(LatentSpatialMemory)
    write = list(inspect.signature(ColorPointCloudMemory.write).parameters)
    assert write == list(inspect.signature(LatentSpatialMemory.write).parameters)[: len(write)]
    rgb, depth = frame()
    assert isinstance(ColorPointCloudMemory().write(rgb, depth, np.eye(4), K), WriteResult)
