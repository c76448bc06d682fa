"""Color point-cloud memory: the Voyager / Spatia-style baseline, as a drop-in world memory.

DESIGN.md section 5. Every kept pixel of every written frame becomes a world point with an
RGB colour (``xyz float32 + rgb uint8``, 15 bytes a point), **appended on every write** as
the published systems do, so the cache grows without bound. Reading renders the cloud at
full pixel resolution with a z-buffer (nearest point wins per pixel); a world using it
re-encodes that render with its codec every step (``World`` does, for ``memory="color"``).

``dedup_voxel_size`` turns on voxel de-duplication: one point per voxel, the first write
wins (within a frame the nearest pixel of a voxel wins). Points are then kept sorted by
voxel key, so a frame's look-ups are a binary search and no extra index is stored. The
world's color memory uses it (at a pixel-scale voxel), so revisits add nothing.

:class:`ColorMemoryBank` implements :class:`~mirage_gym.memory.base.SpatialMemory` for B
worlds (``stores = "pixels"``); :class:`ColorPointCloudMemory` is the bank of one world
with per-frame calls, like :class:`~mirage_gym.memory.latent.LatentSpatialMemory`, with
``features`` being the frame's RGB ``(3, H, W)`` in ``[0, 1]`` (or uint8) at the depth's
resolution. Vectorised torch throughout; no Python loops over points.
"""

from __future__ import annotations

import numpy as np
import torch

from mirage_gym.constants import FAR, VOXEL_SIZE
from mirage_gym.geometry import pick_per_cell, scale_intrinsics, splat_nearest, unproject_depth
from mirage_gym.memory.base import (
    MemoryReadout,
    OneWorldMemory,
    WriteResult,
    checked_cameras,
    checked_grid,
    checked_readout,
    checked_worlds,
)
from mirage_gym.memory.voxels import find, merge_sorted, one_per_voxel, voxel_keys

# Points splatted per chunk on read and measured per chunk for distances: bounds the
# temporaries (an appending cloud reaches tens of millions of points) without changing the result.
_READ_CHUNK = 1 << 22


class _WorldPoints:
    """The points of one world of a :class:`ColorMemoryBank` (only the bank touches them).

    Append mode: row buffers grown by doubling (amortised O(new points) per write).
    Dedup mode: exact-size buffers kept sorted by voxel key (rebuilt by a merge)."""

    def __init__(self, device: torch.device):
        self.xyz = torch.zeros(0, 3, device=device)
        self.rgb = torch.zeros(0, 3, dtype=torch.uint8, device=device)
        self.keys = torch.zeros(0, dtype=torch.long, device=device)
        self.size = 0
        self.clock = 0

    def append(self, xyz: torch.Tensor, rgb: torch.Tensor) -> None:
        n, m = self.size, xyz.shape[0]
        if n + m > self.xyz.shape[0]:
            rows = max(n + m, 2 * self.xyz.shape[0], 4096)
            new_xyz = torch.empty(rows, 3, device=xyz.device)
            new_rgb = torch.empty(rows, 3, dtype=torch.uint8, device=xyz.device)
            new_xyz[:n] = self.xyz[:n]
            new_rgb[:n] = self.rgb[:n]
            self.xyz, self.rgb = new_xyz, new_rgb
        self.xyz[n : n + m] = xyz
        self.rgb[n : n + m] = rgb
        self.size = n + m


class ColorMemoryBank:
    """RGB points at pixel resolution, one cloud per world, appended every write
    (optionally one point per voxel).

    Args:
        num_worlds: how many worlds' clouds the bank holds.
        dedup_voxel_size: ``None`` (default) appends every kept pixel of every write, like
            Voyager / Spatia. A size in metres keeps one point per voxel of that edge
            (first write wins), so revisits add nothing.
        far: points at or beyond this depth (metres) are sky and not written.
        stats_voxel_size: voxel edge used to count occupied voxels in :meth:`stats` when
            not deduplicating (the latent memory's default voxel).
        device: where all tensors live.
    """

    stores = "pixels"  # what reads return and writes take: RGB at image resolution
    channels = 3

    def __init__(
        self,
        num_worlds: int = 1,
        dedup_voxel_size: float | None = None,
        far: float = FAR,
        stats_voxel_size: float = VOXEL_SIZE,
        device: str | torch.device = "cpu",
    ):
        if int(num_worlds) <= 0:
            raise ValueError(f"num_worlds must be positive, got {num_worlds}")
        if dedup_voxel_size is not None and not (float(dedup_voxel_size) > 0):
            raise ValueError(f"dedup_voxel_size must be positive or None, got {dedup_voxel_size}")
        if not far > 0:
            raise ValueError(f"far must be positive, got {far}")
        if not stats_voxel_size > 0:
            raise ValueError(f"stats_voxel_size must be positive, got {stats_voxel_size}")
        self.num_worlds = int(num_worlds)
        self.dedup_voxel_size = None if dedup_voxel_size is None else float(dedup_voxel_size)
        self.far = float(far)
        self.stats_voxel_size = float(stats_voxel_size)
        self.device = torch.device(device)
        self._worlds = [_WorldPoints(self.device) for _ in range(self.num_worlds)]

    # ------------------------------------------------------------------ per world

    def reset(self, index: int) -> None:
        """Forget everything world ``index`` remembers."""
        self._worlds[index] = _WorldPoints(self.device)

    def size(self, index: int) -> int:
        return self._worlds[index].size

    def points(self, index: int) -> torch.Tensor:
        """(N, 3) world xyz of world ``index``'s points (a view of the store: do not modify)."""
        w = self._worlds[index]
        return w.xyz[: w.size]

    @property
    def bytes_per_point(self) -> int:
        """xyz float32 + rgb uint8, plus the int64 voxel key when deduplicating."""
        return 3 * 4 + 3 + (8 if self.dedup_voxel_size is not None else 0)

    def stats(self, index: int) -> dict:
        """World ``index``'s points, bytes held by the stored points, and occupied voxels.

        ``voxels`` counts distinct voxels of ``dedup_voxel_size`` (equal to ``points``) when
        deduplicating, else of ``stats_voxel_size`` (computed on demand: a sort of all points).
        """
        n = self._worlds[index].size
        if self.dedup_voxel_size is not None:
            voxels = n
        elif n:
            voxels = int(torch.unique(voxel_keys(self.points(index), self.stats_voxel_size)[0]).numel())
        else:
            voxels = 0
        return {"points": n, "bytes": n * self.bytes_per_point, "voxels": voxels}

    def config(self) -> dict:
        return {"dedup_voxel_size": self.dedup_voxel_size, "far": self.far, "stats_voxel_size": self.stats_voxel_size}

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-friendly); keys are recomputed on load."""
        w = self._worlds[index]
        return {
            "xyz": w.xyz[: w.size].clone(),
            "rgb": w.rgb[: w.size].clone(),
            "clock": torch.tensor(w.clock, dtype=torch.long),
        }

    def load_state_dict(self, index: int, state: dict[str, torch.Tensor]) -> None:
        """Restore world ``index`` from :meth:`state_dict`; validates everything before
        touching the bank."""
        missing = {"xyz", "rgb", "clock"} - set(state)
        if missing:
            raise ValueError(f"memory state is missing {sorted(missing)}")
        xyz, rgb, clock = (torch.as_tensor(state[name]) for name in ("xyz", "rgb", "clock"))
        n = xyz.shape[0] if xyz.ndim == 2 else -1
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"memory state 'xyz' must have shape (N, 3), got {tuple(xyz.shape)}")
        if tuple(rgb.shape) != (n, 3) or rgb.dtype != torch.uint8:
            raise ValueError(f"memory state 'rgb' must be uint8 of shape ({n}, 3), got {rgb.dtype} {tuple(rgb.shape)}")
        if clock.ndim != 0:
            raise ValueError(f"memory state 'clock' must be a scalar, got shape {tuple(clock.shape)}")
        xyz = xyz.to(self.device, torch.float32)
        if not torch.isfinite(xyz).all():
            raise ValueError("memory state contains NaN or inf")
        w = _WorldPoints(self.device)
        if self.dedup_voxel_size is not None:
            keys, in_range = voxel_keys(xyz, self.dedup_voxel_size)
            if not in_range.all() or torch.unique(keys).numel() != n:
                raise ValueError("memory state has several points in one voxel (saved without dedup or another voxel size)")
            order = torch.argsort(keys)
            w.keys, xyz, rgb = keys[order], xyz[order], rgb[order]
        w.xyz, w.rgb = xyz.clone(), rgb.to(self.device).clone()
        w.size, w.clock = n, int(clock)
        self._worlds[index] = w

    # ------------------------------------------------------------------ write / read

    def _checked_rgb(self, features: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Features (B, 3, H, W) as (B, H, W, 3) uint8 (uint8 is taken as is, floats must be in [0, 1])."""
        if features.ndim != 4 or features.shape[1] != 3 or (features.shape[0], *features.shape[2:]) != shape:
            raise ValueError(f"features must have shape ({shape[0]}, 3, {shape[1]}, {shape[2]}) like depth, "
                             f"got {tuple(features.shape)}")
        if features.dtype == torch.uint8:
            return features.to(self.device).permute(0, 2, 3, 1)
        f = features.to(self.device).float()
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or inf")
        if (f < 0).any() or (f > 1).any():
            raise ValueError("features must be RGB in [0, 1] (or uint8)")
        return (f.permute(0, 2, 3, 1) * 255.0 + 0.5).to(torch.uint8)

    def write(self, features: torch.Tensor, depth: torch.Tensor, poses, intrinsics, keep_mask: torch.Tensor,
              confidence: torch.Tensor, readout: MemoryReadout | None = None,
              residual_tolerance: float | None = None, skip_cells: torch.Tensor | None = None,
              worlds=None) -> list[WriteResult]:
        """Lift every kept pixel of frame ``b`` to a coloured point of world ``worlds[b]``.

        Args:
            features: (B, 3, H, W) RGB in [0, 1] (or uint8) at the depth's resolution.
            depth: (B, H, W) z-depth, ``inf`` for sky.
            poses, intrinsics: one 4x4 camera-to-world and one 3x3 intrinsics of the (H, W)
                grid per frame.
            keep_mask: (B, H, W) bool, False for pixels not to remember (sky, dynamic objects).
            confidence: (B, H, W) in [0, 1]. The published baselines keep no confidence;
                pixels with confidence 0 are simply not written.
            readout, residual_tolerance: as the latent memory's, per pixel: a pixel closer
                than the rendered memory there by more than the tolerance is not written.
            skip_cells: (B, H, W) bool of pixels not to write (e.g. the frame copied them
                from memory), though they count as seen.

        Returns one :class:`WriteResult` per frame: ``added`` points stored and
        ``static_xyz`` the lifted points of every kept pixel, stored or not.
        """
        worlds = checked_worlds(worlds, self.num_worlds)
        b = len(worlds)
        if depth.ndim != 3 or depth.shape[0] != b or keep_mask.shape != depth.shape:
            raise ValueError(f"depth and keep_mask must have one (H, W) map per world, got {tuple(depth.shape)} "
                             f"and {tuple(keep_mask.shape)}")
        hw = tuple(depth.shape[1:])
        rgb = self._checked_rgb(features, tuple(depth.shape))
        conf = confidence.to(self.device)
        if tuple(conf.shape) != tuple(depth.shape) or not torch.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
            raise ValueError(f"confidence must have shape {tuple(depth.shape)}, with values in [0, 1]")
        poses_t, ks = checked_cameras(poses, intrinsics, self.device)
        d = depth.to(self.device)
        static = keep_mask.to(self.device) & torch.isfinite(d) & (d > 0) & (d < self.far) & (conf > 0)
        write = static.clone()
        if skip_cells is not None:
            write &= ~skip_cells.to(self.device)
        if residual_tolerance is not None:
            if readout is None:
                readout = self.read(poses_t, ks, hw, touch=False, worlds=worlds)
            checked_readout(readout, b, hw)
            write &= ~((d < readout.depth[:, 0] * (1.0 - residual_tolerance)) & (readout.mask[:, 0] > 0))
        lifted = unproject_depth(d.double(), ks, poses_t).float()
        results = []
        for i, world in enumerate(worlds):
            store = self._worlds[world]
            store.clock += 1
            xyz, colors, z = lifted[i][write[i]], rgb[i][write[i]], d[i][write[i]]
            results.append(WriteResult(added=self._add(store, xyz, colors, z), static_xyz=lifted[i][static[i]],
                                       static_cells=static[i]))
        return results

    def _add(self, store: _WorldPoints, xyz: torch.Tensor, colors: torch.Tensor, z: torch.Tensor) -> int:
        if xyz.shape[0] == 0:
            return 0
        if self.dedup_voxel_size is None:
            store.append(xyz, colors)
            return xyz.shape[0]
        keys, in_range = voxel_keys(xyz, self.dedup_voxel_size)
        if not in_range.all():
            keys, xyz, colors, z = keys[in_range], xyz[in_range], colors[in_range], z[in_range]
        keys, pick = one_per_voxel(keys, z)  # the nearest pixel of a voxel (stable, so deterministic)
        pos, known = find(store.keys, keys)  # first write wins
        fresh = ~known
        store.keys, (store.xyz, store.rgb) = merge_sorted(
            store.keys, keys[fresh], pos[fresh], ((store.xyz, xyz[pick][fresh]), (store.rgb, colors[pick][fresh])))
        store.size = store.keys.numel()
        return int(fresh.sum())

    def read(self, poses, intrinsics, grid_size, image_size=None, touch: bool = True, worlds=None) -> MemoryReadout:
        """Render world ``worlds[b]``'s cloud (default: all) onto camera ``b`` at
        ``grid_size`` (h, w) pixels, nearest point winning; one batched readout.

        ``intrinsics`` are for ``image_size`` (H, W) if given, else for the grid itself.
        ``features`` are RGB in [0, 1] (zero where no point landed). ``touch`` is accepted
        for the protocol: this memory never evicts.
        """
        worlds = checked_worlds(worlds, self.num_worlds)
        if len(poses) != len(worlds) or len(intrinsics) != len(worlds):
            raise ValueError(f"need one pose and one intrinsics per world, got {len(worlds)} worlds, "
                             f"{len(poses)} poses and {len(intrinsics)} intrinsics")
        poses_t, ks = checked_cameras(poses, intrinsics, self.device)
        h, w = checked_grid(grid_size, "grid_size")
        if image_size is not None:
            ks = scale_intrinsics(ks, checked_grid(image_size, "image_size"), (h, w))
        b = len(worlds)
        features = torch.zeros(b, h * w, 3, device=self.device)
        mask = torch.zeros(b, h * w, device=self.device)
        depth_map = torch.full((b, h * w), float("inf"), device=self.device)
        for i, world in enumerate(worlds):
            store = self._worlds[world]
            cells, points, depth = self._render(store, ks[i].float(), poses_t[i].float(), h, w)
            features[i, cells] = store.rgb[points].float() / 255.0
            mask[i, cells] = 1.0
            depth_map[i, cells] = depth
        return MemoryReadout(features=features.transpose(1, 2).contiguous().view(b, 3, h, w), mask=mask.view(b, 1, h, w),
                             depth=depth_map.view(b, 1, h, w))

    def _render(self, store: _WorldPoints, k: torch.Tensor, pose: torch.Tensor, h: int, w: int):
        """Cells, winning points and depths of one cloud seen by one camera, a chunk of
        points at a time (not a loop over points)."""
        cells, points, depth = [], [], []
        for start in range(0, store.size, _READ_CHUNK):
            c, p, z = splat_nearest(store.xyz[start : min(start + _READ_CHUNK, store.size)], k, pose, h, w)
            cells.append(c)
            points.append(p + start)
            depth.append(z)
        if not cells:
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return empty, empty, torch.zeros(0, device=self.device)
        if len(cells) == 1:
            return cells[0], points[0], depth[0]
        # merge the chunks' z-buffers: nearest wins, ties toward the lower point index
        cells, points, depth = torch.cat(cells), torch.cat(points), torch.cat(depth)
        best = torch.full((h * w,), float("inf"), device=self.device)
        best.scatter_reduce_(0, cells, depth, reduce="amin")
        filled, winners = pick_per_cell(cells, depth, None, points, h * w, 0.0)
        return filled, winners, best[filled]

    def distances(self, points, worlds=None) -> list[float]:
        """Distance (metres) from ``points[b]`` (3,) to the nearest point of world
        ``worlds[b]`` (inf if it is empty): a scan of the cloud, chunk by chunk."""
        worlds = checked_worlds(worlds, self.num_worlds)
        p = torch.as_tensor(np.asarray(points, dtype=np.float64), device=self.device).reshape(len(worlds), 3).float()
        out = []
        for i, world in enumerate(worlds):
            xyz = self.points(world)
            best = torch.tensor(float("inf"), device=self.device)
            for start in range(0, xyz.shape[0], _READ_CHUNK):
                best = torch.minimum(best, ((xyz[start : start + _READ_CHUNK] - p[i]) ** 2).sum(dim=1).min())
            out.append(float(best.sqrt()))
        return out


class ColorPointCloudMemory(OneWorldMemory):
    """The color point-cloud memory of one world: a :class:`ColorMemoryBank` of one world
    with per-frame calls; takes the bank's arguments but ``num_worlds``."""

    channels = 3

    def __init__(self, dedup_voxel_size: float | None = None, far: float = FAR, stats_voxel_size: float = VOXEL_SIZE,
                 device: str | torch.device = "cpu"):
        super().__init__(ColorMemoryBank(1, dedup_voxel_size, far, stats_voxel_size, device))

    @property
    def clock(self) -> int:
        return self.bank._worlds[0].clock
