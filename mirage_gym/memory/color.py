"""Color point-cloud memory: the Voyager / Spatia-style baseline, for side-by-side benchmarks.

DESIGN.md section 5. Every kept pixel of every written frame becomes a world point with an
RGB colour (``xyz float32 + rgb uint8``, 15 bytes a point), **appended on every write** as
the published systems do, so the cache grows without bound. Reading renders the cloud at
full pixel resolution with a z-buffer (nearest point wins per pixel); a world model using
it must then re-encode that render with its codec every step (the benchmark times that).

``dedup_voxel_size`` turns on a fairer variant: one point per voxel, the first write wins
(within a frame the nearest pixel of a voxel wins). Points are then kept sorted by voxel
key, so a frame's look-ups are a binary search and no extra index is stored.

Same interface as :class:`~mirage_gym.memory.latent.LatentSpatialMemory` (``write``,
``read`` -> :class:`MemoryReadout`, ``stats``, ``state_dict`` / ``load_state_dict``,
``clear``, ``len``), with ``features`` being the frame's RGB ``(3, H, W)`` in ``[0, 1]``
at the depth's resolution. Vectorised torch throughout; no Python loops over points.
"""

from __future__ import annotations

import torch

from mirage_gym.geometry import scale_intrinsics, splat_nearest, unproject_depth
from mirage_gym.memory.base import (
    MemoryReadout,
    as_tensor,
    checked_depth,
    checked_grid,
    checked_intrinsics,
    checked_keep_mask,
    checked_pose,
)
from mirage_gym.memory.latent import WriteResult, voxel_keys

# Points splatted per chunk on read: bounds the read's temporaries (an appending cloud
# reaches tens of millions of points) without changing the result.
_READ_CHUNK = 1 << 22


class ColorPointCloudMemory:
    """RGB points at pixel resolution, appended every write (optionally one per voxel).

    Args:
        dedup_voxel_size: ``None`` (default) appends every kept pixel of every write, like
            Voyager / Spatia. A size in metres keeps one point per voxel of that edge
            (first write wins), so revisits add nothing.
        far: points farther than this (metres) are treated like sky and not written.
        stats_voxel_size: voxel edge used to count occupied voxels in :meth:`stats` when
            not deduplicating (0.05 m, the latent memory's default voxel).
        device: where all tensors live.
    """

    channels = 3

    def __init__(
        self,
        dedup_voxel_size: float | None = None,
        far: float = 100.0,
        stats_voxel_size: float = 0.05,
        device: str | torch.device = "cpu",
    ):
        if dedup_voxel_size is not None and not (float(dedup_voxel_size) > 0):
            raise ValueError(f"dedup_voxel_size must be positive or None, got {dedup_voxel_size}")
        if not far > 0:
            raise ValueError(f"far must be positive, got {far}")
        if not stats_voxel_size > 0:
            raise ValueError(f"stats_voxel_size must be positive, got {stats_voxel_size}")
        self.dedup_voxel_size = None if dedup_voxel_size is None else float(dedup_voxel_size)
        self.far = float(far)
        self.stats_voxel_size = float(stats_voxel_size)
        self.device = torch.device(device)
        self.clear()

    # ------------------------------------------------------------------ storage

    def clear(self) -> None:
        """Forget everything."""
        dev = self.device
        # Append mode: row buffers grown by doubling (amortised O(new points) per write).
        # Dedup mode: exact-size buffers kept sorted by voxel key (rebuilt by a merge).
        self._xyz = torch.zeros(0, 3, device=dev)
        self._rgb = torch.zeros(0, 3, dtype=torch.uint8, device=dev)
        self._keys = torch.zeros(0, dtype=torch.long, device=dev)
        self.size = 0
        self.clock = 0

    def _append(self, xyz: torch.Tensor, rgb: torch.Tensor) -> None:
        n, m = self.size, xyz.shape[0]
        if n + m > self._xyz.shape[0]:
            rows = max(n + m, 2 * self._xyz.shape[0], 4096)
            new_xyz = torch.empty(rows, 3, device=self.device)
            new_rgb = torch.empty(rows, 3, dtype=torch.uint8, device=self.device)
            new_xyz[:n] = self._xyz[:n]
            new_rgb[:n] = self._rgb[:n]
            self._xyz, self._rgb = new_xyz, new_rgb
        self._xyz[n : n + m] = xyz
        self._rgb[n : n + m] = rgb
        self.size = n + m

    def _merge(self, keys: torch.Tensor, xyz: torch.Tensor, rgb: torch.Tensor) -> None:
        """Merge new, absent, unique keys (and their points) into the key-sorted storage."""
        order = torch.argsort(keys)
        keys, xyz, rgb = keys[order], xyz[order], rgb[order]
        n, m = self.size, keys.numel()
        dev = self.device
        pos = torch.searchsorted(self._keys, keys)
        new_at = pos + torch.arange(m, device=dev)
        old_at = torch.arange(n, device=dev) + torch.searchsorted(pos, torch.arange(n, device=dev), right=True)
        merged_keys = torch.empty(n + m, dtype=torch.long, device=dev)
        merged_xyz = torch.empty(n + m, 3, device=dev)
        merged_rgb = torch.empty(n + m, 3, dtype=torch.uint8, device=dev)
        merged_keys[new_at], merged_xyz[new_at], merged_rgb[new_at] = keys, xyz, rgb
        merged_keys[old_at], merged_xyz[old_at], merged_rgb[old_at] = self._keys, self._xyz, self._rgb
        self._keys, self._xyz, self._rgb = merged_keys, merged_xyz, merged_rgb
        self.size = n + m

    def _known(self, keys: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self._keys, keys).clamp(max=self.size - 1)
        return self._keys[pos] == keys

    # ------------------------------------------------------------------ write / read

    def _checked_rgb(self, features, hw: tuple[int, int]) -> torch.Tensor:
        """Features as (H, W, 3) uint8 (uint8 input is taken as is, floats must be in [0, 1])."""
        if isinstance(features, torch.Tensor) and features.dtype == torch.uint8:
            raw = features.to(self.device)
        else:
            raw = as_tensor(features, "features", self.device, None)
        if raw.ndim != 3 or raw.shape[0] != 3 or tuple(raw.shape[1:]) != hw:
            raise ValueError(f"features must have shape (3, {hw[0]}, {hw[1]}) like depth, got {tuple(raw.shape)}")
        if raw.dtype == torch.uint8:
            return raw.permute(1, 2, 0)
        f = raw.float()
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or inf")
        if (f < 0).any() or (f > 1).any():
            raise ValueError("features must be RGB in [0, 1] (or uint8)")
        return (f.permute(1, 2, 0) * 255.0 + 0.5).to(torch.uint8)

    def write(
        self, features, depth, pose, intrinsics, keep_mask=None, confidence: float | torch.Tensor = 1.0
    ) -> WriteResult:
        """Lift every kept pixel to a coloured world point and store it.

        Returns a :class:`WriteResult` like the latent memory: ``added`` points stored and
        ``static_xyz`` the lifted points of every kept pixel, stored or not.

        Args:
            features: (3, H, W) RGB in [0, 1] (or uint8) at the depth's resolution.
            depth: (H, W) z-depth, ``inf`` for sky.
            pose: 4x4 camera-to-world of the frame.
            intrinsics: 3x3 intrinsics of the (H, W) grid.
            keep_mask: (H, W) bool, False for pixels not to remember (sky, dynamic objects).
            confidence: scalar or (H, W) in [0, 1]. The published baselines keep no
                confidence; pixels with confidence 0 are simply not written.
        """
        d = checked_depth(depth, self.device)
        hw = tuple(d.shape)
        rgb = self._checked_rgb(features, hw)
        pose_t = checked_pose(pose, self.device)
        k = checked_intrinsics(intrinsics, self.device)
        keep = checked_keep_mask(keep_mask, hw, self.device)
        conf = as_tensor(confidence, "confidence", self.device, torch.float32)
        if conf.ndim == 0:
            conf = conf.expand(hw)
        if tuple(conf.shape) != hw or not torch.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
            raise ValueError(f"confidence must be a scalar or have shape {hw}, with values in [0, 1]")

        self.clock += 1
        keep = keep & torch.isfinite(d) & (d > 0) & (d < self.far) & (conf > 0)
        xyz = unproject_depth(d.double(), k, pose_t).float()[keep]
        result = WriteResult(added=0, static_xyz=xyz)
        if xyz.shape[0] == 0:
            return result
        colors = rgb[keep]
        z = d[keep]

        if self.dedup_voxel_size is None:
            self._append(xyz, colors)
            result.added = xyz.shape[0]
            return result

        keys, in_range = voxel_keys(xyz, self.dedup_voxel_size)
        if not in_range.all():
            keys, xyz, colors, z = keys[in_range], xyz[in_range], colors[in_range], z[in_range]
        # one point per voxel within the frame: the nearest pixel (stable, so deterministic)
        order = torch.argsort(z, stable=True)
        uniq, inverse = torch.unique(keys, return_inverse=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=self.device)
        first = torch.full((uniq.numel(),), order.numel(), dtype=torch.long, device=self.device)
        first.scatter_reduce_(0, inverse, rank, reduce="amin")
        pick = order[first]
        keys, xyz, colors = keys[pick], xyz[pick], colors[pick]
        fresh = ~self._known(keys)  # first write wins
        result.added = int(fresh.sum())
        if result.added:
            self._merge(keys[fresh], xyz[fresh], colors[fresh])
        return result

    def read(self, pose, intrinsics, grid_size, image_size=None, touch: bool = True) -> MemoryReadout:
        """Render the cloud onto a camera at ``grid_size`` (h, w) pixels; nearest point wins.

        ``intrinsics`` are for ``image_size`` (H, W) if given, else for the grid itself.
        ``features`` are RGB in [0, 1] (zero where no point landed). ``touch`` is accepted
        for interface compatibility: this memory never evicts.
        """
        pose_t = checked_pose(pose, self.device)
        k = checked_intrinsics(intrinsics, self.device)
        h, w = checked_grid(grid_size, "grid_size")
        if image_size is not None:
            k = scale_intrinsics(k, checked_grid(image_size, "image_size"), (h, w))
        k32, pose32 = k.float(), pose_t.float()
        cells, points, depth = [], [], []
        for start in range(0, self.size, _READ_CHUNK):  # chunks of points, not a loop over points
            c, p, z = splat_nearest(self._xyz[start : min(start + _READ_CHUNK, self.size)], k32, pose32, h, w)
            cells.append(c)
            points.append(p + start)
            depth.append(z)
        if len(cells) == 1:
            cells, points, depth = cells[0], points[0], depth[0]
        elif cells:
            # merge the chunks' z-buffers: nearest wins, ties toward the lower point index
            cells, points, depth = torch.cat(cells), torch.cat(points), torch.cat(depth)
            best = torch.full((h * w,), float("inf"), device=self.device)
            best.scatter_reduce_(0, cells, depth, reduce="amin")
            win = depth <= best[cells]
            big = torch.iinfo(torch.long).max
            first = torch.full((h * w,), big, dtype=torch.long, device=self.device)
            first.scatter_reduce_(0, cells[win], points[win], reduce="amin")
            cells = torch.nonzero(first != big, as_tuple=True)[0]
            points, depth = first[cells], best[cells]
        else:
            cells = points = torch.zeros(0, dtype=torch.long, device=self.device)
            depth = torch.zeros(0, device=self.device)
        features = torch.zeros(h * w, 3, device=self.device)
        features[cells] = self._rgb[points].float() / 255.0
        mask = torch.zeros(h * w, device=self.device)
        mask[cells] = 1.0
        depth_map = torch.full((h * w,), float("inf"), device=self.device)
        depth_map[cells] = depth
        return MemoryReadout(
            features=features.T.reshape(3, h, w),
            mask=mask.reshape(1, h, w),
            depth=depth_map.reshape(1, h, w),
        )

    # ------------------------------------------------------------------ stats / state

    @property
    def bytes_per_point(self) -> int:
        """xyz float32 + rgb uint8, plus the int64 voxel key when deduplicating."""
        return 3 * 4 + 3 + (8 if self.dedup_voxel_size is not None else 0)

    def stats(self) -> dict:
        """Points, bytes held by the stored points, and occupied voxels.

        ``voxels`` counts distinct voxels of ``dedup_voxel_size`` (equal to ``points``) when
        deduplicating, else of ``stats_voxel_size`` (computed on demand: a sort of all points).
        """
        if self.dedup_voxel_size is not None:
            voxels = self.size
        elif self.size:
            voxels = int(torch.unique(voxel_keys(self._xyz[: self.size], self.stats_voxel_size)[0]).numel())
        else:
            voxels = 0
        return {"points": self.size, "bytes": self.size * self.bytes_per_point, "voxels": voxels}

    def __len__(self) -> int:
        return self.size

    def config(self) -> dict:
        return {"dedup_voxel_size": self.dedup_voxel_size, "far": self.far, "stats_voxel_size": self.stats_voxel_size}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-friendly); keys are recomputed on load."""
        n = self.size
        return {
            "xyz": self._xyz[:n].clone(),
            "rgb": self._rgb[:n].clone(),
            "clock": torch.tensor(self.clock, dtype=torch.long),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; validates everything before touching ``self``."""
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
        keys = torch.zeros(0, dtype=torch.long, device=self.device)
        if self.dedup_voxel_size is not None:
            keys, in_range = voxel_keys(xyz, self.dedup_voxel_size)
            if not in_range.all() or torch.unique(keys).numel() != n:
                raise ValueError("memory state has several points in one voxel (saved without dedup or another voxel size)")
            order = torch.argsort(keys)
            keys, xyz, rgb = keys[order], xyz[order], rgb[order]
        self._xyz = xyz.clone()
        self._rgb = rgb.to(self.device).clone()
        self._keys = keys
        self.size = n
        self.clock = int(clock)
