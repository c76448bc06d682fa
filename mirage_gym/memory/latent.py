"""Latent spatial memory: the generator's own latent cells, lifted to 3D and kept in a voxel hash.

Mirage's mechanism (DESIGN.md section 1): every kept latent cell is lifted to a world
point with depth pooled to the latent grid, and memory is read by projecting the points
onto the target camera *at latent resolution* with a z-buffer. No pixel rendering and no
encoder call happen on the read path.

Where Mirage appends every point, this memory keeps one entry per voxel (the first
confident write wins, so the seed view is never degraded) and a capacity cap with
least-recently-seen eviction, so memory and per-step cost stay flat over unbounded
episodes. Everything is vectorised torch on the memory's device.

Reads cost what the camera can see, not what memory holds: the sorted voxel index is
ordered chunk first (a chunk is 16^3 voxels, 0.8 m cubes at 5 cm), so each chunk's entries
are one contiguous range of it. A read keeps the chunks whose bounding sphere meets the
view frustum and projects only their entries; a culled chunk cannot hold a point in view,
so the result is exactly the brute-force one. The nearest-point query culls the same way.

Cells that are mostly sky have no depth to lift; they go to a sky dome kept by direction
(:mod:`mirage_gym.memory.sky`) and show wherever no surface does. A read also fills
one-cell holes in a surface (see :func:`mirage_gym.geometry.splat_nearest`).

Entries are stored compactly: latent vectors as float16 by default (the generator gets
float32 back; the rounding, about 5e-4 relative, is far below the codec's error),
recency and index slots as int32, confidence as float16; voxel keys are kept only in the
sorted index (they are a function of the points, recomputed when needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mirage_gym.geometry import project_per_point, ringed_frame_rays, scale_intrinsics, splat_nearest, unproject_depth
from mirage_gym.memory.base import (
    MemoryReadout,
    as_tensor,
    checked_depth,
    checked_grid,
    checked_cameras,
    checked_keep_mask,
    merge_sorted,
    pool_depth,
)
from mirage_gym.memory.sky import SkyDome, read_domes

_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)
_CHUNK_BITS = 4  # a chunk is 16 voxels a side (0.8 m at 5 cm): the unit of culling
_LOCAL_BITS = 3 * _CHUNK_BITS
_NO_SLOT = -1
_NEAR = 1e-3  # metres: points closer to the camera plane are not read
# points within this fraction of a cell's nearest depth are one surface; the one landing
# closest to the cell centre shows (at a revisited pose, the cell's own point)
SURFACE_TOLERANCE = 0.25
_ENTRY_BUFFERS = ("_xyz", "_features", "_last_seen", "_confidence")


def _voxel_ijk(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative voxel coordinates (N, 3) of 21 bits each, and which points fit them."""
    ijk = torch.floor(xyz / voxel_size).long() + _KEY_OFFSET
    in_range = ((ijk >= 0) & (ijk < (1 << _KEY_BITS))).all(dim=1)
    return ijk.clamp(0, (1 << _KEY_BITS) - 1), in_range


def _pack(ijk: torch.Tensor, bits: int) -> torch.Tensor:
    return (ijk[:, 0] << (2 * bits)) | (ijk[:, 1] << bits) | ijk[:, 2]


def voxel_keys(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One int64 key per point for its voxel, and which points are inside the hashable range.

    21 bits per axis: at 5 cm voxels that spans about 100 km, far beyond any scene.
    """
    ijk, in_range = _voxel_ijk(xyz, voxel_size)
    return _pack(ijk, _KEY_BITS), in_range


def chunk_major_keys(xyz: torch.Tensor, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`voxel_keys` but with the voxel's chunk in the high bits (``key >> _LOCAL_BITS``
    is the chunk id), so that sorted, the voxels of one chunk are contiguous."""
    ijk, in_range = _voxel_ijk(xyz, voxel_size)
    chunk = _pack(ijk >> _CHUNK_BITS, _KEY_BITS - _CHUNK_BITS)
    local = _pack(ijk & ((1 << _CHUNK_BITS) - 1), _CHUNK_BITS)
    return (chunk << _LOCAL_BITS) | local, in_range


@dataclass
class WriteResult:
    """What a write did: ``added`` new entries; ``static_xyz`` (M, 3) the lifted points of
    every static cell of the frame, written or not (explored-space bookkeeping uses them)."""

    added: int
    static_xyz: torch.Tensor
    static_cells: torch.Tensor | None = None  # (h, w) bool: the cells behind ``static_xyz``


class LatentSpatialMemory:
    """A bounded 3D memory of latent vectors, read at latent resolution.

    Args:
        channels: latent channels C of every written feature grid.
        voxel_size: edge of a hash voxel in metres; one entry per voxel.
        capacity: most entries kept; beyond it the least recently seen are evicted
            (``None`` for unbounded).
        depth_pooling: ``"area"`` (mean, Mirage's choice) or ``"median"``.
        far: points farther than this (metres) are treated like sky and not written.
        confident: confidence at or above which a written entry is final; a less
            confident entry is replaced by a later, more confident write of its voxel.
        feature_dtype: storage dtype of latent vectors; float16 halves memory, float32
            keeps reads bit-exact. Reads always return float32.
        device: where all tensors live.
    """

    def __init__(
        self,
        channels: int,
        voxel_size: float = 0.05,
        capacity: int | None = 262_144,
        depth_pooling: str = "area",
        far: float = 100.0,
        confident: float = 0.5,
        feature_dtype: torch.dtype = torch.float16,
        device: str | torch.device = "cpu",
    ):
        if int(channels) <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        if capacity is not None and int(capacity) <= 0:
            raise ValueError(f"capacity must be positive or None, got {capacity}")
        if depth_pooling not in ("area", "median"):
            raise ValueError(f"depth_pooling must be 'area' or 'median', got {depth_pooling!r}")
        if not far > 0:
            raise ValueError(f"far must be positive, got {far}")
        if not feature_dtype.is_floating_point:
            raise ValueError(f"feature_dtype must be a floating dtype, got {feature_dtype}")
        self.channels = int(channels)
        self.voxel_size = float(voxel_size)
        self.capacity = None if capacity is None else int(capacity)
        self.depth_pooling = depth_pooling
        self.far = float(far)
        self.confident = float(confident)
        self.feature_dtype = feature_dtype
        self.device = torch.device(device)
        # bounding-sphere radius of a chunk, 5% over so float rounding never culls a point in view
        self._chunk_radius = 1.05 * 0.5 * math.sqrt(3.0) * (1 << _CHUNK_BITS) * self.voxel_size
        self.clear()

    # ------------------------------------------------------------------ storage

    def clear(self) -> None:
        """Forget everything."""
        self._alloc(1024)
        self.sky = SkyDome(self.channels, self.feature_dtype, self.device)
        self.size = 0
        self.clock = 0

    def _alloc(self, rows: int) -> None:
        dev = self.device
        self._xyz = torch.zeros(rows, 3, device=dev)
        self._features = torch.zeros(rows, self.channels, dtype=self.feature_dtype, device=dev)
        self._last_seen = torch.zeros(rows, dtype=torch.int32, device=dev)
        self._confidence = torch.zeros(rows, dtype=torch.float16, device=dev)
        # chunk-major keys of all entries, sorted, and their slots: O(M log N) look-ups of a
        # frame's M keys, and each chunk's entries as one range
        self._sorted_keys = torch.zeros(0, dtype=torch.long, device=dev)
        self._sorted_slots = torch.zeros(0, dtype=torch.int32, device=dev)
        self._set_chunks(torch.zeros(0, dtype=torch.long, device=dev))
        self._last_read = None  # (pose, intrinsics, grid, mask, depth) while memory is unchanged

    def _grow(self, needed: int) -> None:
        rows = self._xyz.shape[0]
        if needed <= rows:
            return
        new_rows = max(needed, 2 * rows)
        for name in _ENTRY_BUFFERS:
            old = getattr(self, name)
            new = torch.zeros((new_rows,) + tuple(old.shape[1:]), dtype=old.dtype, device=old.device)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def _reindex(self) -> None:
        keys, _ = chunk_major_keys(self._xyz[: self.size], self.voxel_size)
        self._sorted_keys, order = torch.sort(keys)
        self._sorted_slots = order.to(torch.int32)
        self._set_chunks(torch.unique_consecutive(self._sorted_keys >> _LOCAL_BITS))

    def _lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """Slot of each key, or ``_NO_SLOT``."""
        if self._sorted_keys.numel() == 0:
            return torch.full_like(keys, _NO_SLOT)
        pos = torch.searchsorted(self._sorted_keys, keys).clamp(max=self._sorted_keys.numel() - 1)
        hit = self._sorted_keys[pos] == keys
        return torch.where(hit, self._sorted_slots[pos].long(), torch.full_like(keys, _NO_SLOT))

    def _insert_sorted(self, keys: torch.Tensor, slots: torch.Tensor) -> None:
        """Merge new keys (sorted, unique, absent) and their slots into the sorted index."""
        self._sorted_keys, (self._sorted_slots,) = merge_sorted(self._sorted_keys, keys,
                                                                values=((self._sorted_slots, slots),))
        self._set_chunks(torch.unique(torch.cat([self._chunks, keys >> _LOCAL_BITS])))

    def _evict(self) -> None:
        """Drop the least recently seen entries down to 90% of capacity (batched, so rare)."""
        keep_n = int(self.capacity * 0.9)
        order = torch.argsort(self._last_seen[: self.size], descending=True, stable=True)
        keep = torch.sort(order[:keep_n]).values
        for name in _ENTRY_BUFFERS:
            buf = getattr(self, name)
            buf[:keep_n] = buf[keep]
        self.size = keep_n
        self._reindex()

    # ------------------------------------------------------------------ chunk culling

    def _set_chunks(self, chunks: torch.Tensor) -> None:
        """The occupied chunk ids (sorted) and their world centres (K, 3) float64."""
        bits = _KEY_BITS - _CHUNK_BITS
        mask = (1 << bits) - 1
        c = torch.stack([(chunks >> (2 * bits)) & mask, (chunks >> bits) & mask, chunks & mask], dim=1)
        side = 1 << _CHUNK_BITS
        self._chunks = chunks
        self._centres = ((c.double() + 0.5) * side - _KEY_OFFSET) * self.voxel_size

    def _slots_of(self, chunks: torch.Tensor) -> torch.Tensor:
        """Slots of every entry in ``chunks`` (sorted ids), in key order: each chunk is one
        range of the sorted index, so this is a subsequence of ``_sorted_slots``."""
        lo = torch.searchsorted(self._sorted_keys, chunks << _LOCAL_BITS)
        hi = torch.searchsorted(self._sorted_keys, (chunks + 1) << _LOCAL_BITS)
        counts = hi - lo
        starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
        positions = starts + torch.arange(starts.numel(), device=self.device)
        return self._sorted_slots[positions].long()

    def _slots_in_view(self, pose: torch.Tensor, k: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Slots of the entries in chunks whose bounding sphere meets the frustum of an
        ``h x w`` grid with intrinsics ``k`` (a superset of the points that land in it)."""
        return _slots_in_views([self], pose[None], k[None], h, w)[0]

    # ------------------------------------------------------------------ write / read

    def write(
        self,
        features,
        depth,
        pose,
        intrinsics,
        keep_mask=None,
        confidence: float | torch.Tensor = 1.0,
        reject_closer_than_memory: float | None = None,
        skip_cells=None,
    ) -> WriteResult:
        """Lift a latent grid to 3D and store it.

        Args:
            features: (C, h, w) latent grid.
            depth: (H, W) z-depth at image resolution, ``inf`` for sky; (H, W) must be a
                whole multiple of (h, w). It is pooled onto the latent grid.
            pose: 4x4 camera-to-world of the frame.
            intrinsics: 3x3 intrinsics of the (H, W) depth grid.
            keep_mask: (H, W) bool, False for pixels not to remember (sky, dynamic
                objects). A latent cell is written only if all its pixels are kept or
                sky, at least half of them surface (see ``pool_depth``).
            confidence: scalar or (h, w) in [0, 1]; known depth is 1, predicted less.
            reject_closer_than_memory: if set, a cell whose depth is closer than the
                remembered surface there by more than this fraction is not written: it
                is likely a moving object in front of static memory (a reprojection
                residual check).
            skip_cells: optional (h, w) bool of cells not to write (e.g. cells the frame
                copied from memory), though they still count as seen.

        A cell that is more than half sky (depth inf or at least ``far``; a moving object
        always has a depth) and otherwise kept goes to the sky dome, by direction, not to
        the 3D memory.
        """
        feats = as_tensor(features, "features", self.device, torch.float32)
        if feats.ndim != 3 or feats.shape[0] != self.channels:
            raise ValueError(f"features must have shape ({self.channels}, h, w), got {tuple(feats.shape)}")
        d = checked_depth(depth, self.device)
        keep = checked_keep_mask(keep_mask, d.shape, self.device)
        grid = tuple(feats.shape[1:])
        conf = torch.as_tensor(confidence, dtype=torch.float32, device=self.device)
        if conf.ndim == 0:
            conf = conf.expand(grid)
        if tuple(conf.shape) != grid or not torch.isfinite(conf).all():
            raise ValueError(f"confidence must be a finite scalar or have shape {grid}")
        skip = None
        if skip_cells is not None:
            skip = torch.as_tensor(skip_cells, device=self.device).bool()
            if tuple(skip.shape) != grid:
                raise ValueError(f"skip_cells must have shape {grid}, got {tuple(skip.shape)}")
            skip = skip[None]
        return write_memories([self], feats[None], d[None], [pose], [intrinsics], keep[None], conf[None],
                              reject_closer_than_memory, skip)[0]

    def _store(self, keys: torch.Tensor, xyz: torch.Tensor, feats: torch.Tensor, conf: torch.Tensor,
               cell_depth: torch.Tensor) -> int:
        """Merge lifted cells (chunk-major ``keys``, points, stored-dtype features,
        confidence, depth; all in hashable range) into the entries; returns how many are new."""
        if xyz.shape[0] == 0:
            return 0
        self._last_read = None  # the remembered geometry changes below
        # one candidate per voxel within the frame: the most confident, then the nearest
        order = torch.argsort(cell_depth - 1e6 * conf, stable=True)
        uniq, inverse = torch.unique(keys, return_inverse=True)
        first = torch.full((uniq.numel(),), order.numel(), dtype=torch.long, device=self.device)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=self.device)
        first.scatter_reduce_(0, inverse, rank, reduce="amin")
        pick = order[first]
        keys, xyz, feats = keys[pick], xyz[pick], feats[pick]  # keys sorted, as ``uniq``
        conf = conf[pick].to(self._confidence.dtype)  # compared as stored

        slots = self._lookup(keys)
        known = slots != _NO_SLOT
        known_slots = slots[known]
        self._last_seen[known_slots] = self.clock
        upgrade = (self._confidence[known_slots] < self.confident) & (conf[known] > self._confidence[known_slots])
        up_slots = known_slots[upgrade]
        self._xyz[up_slots] = xyz[known][upgrade]
        self._features[up_slots] = feats[known][upgrade]
        self._confidence[up_slots] = conf[known][upgrade]

        fresh = ~known
        n_new = int(fresh.sum())
        if n_new:
            start = self.size
            self._grow(start + n_new)
            sl = slice(start, start + n_new)
            self._xyz[sl] = xyz[fresh]
            self._features[sl] = feats[fresh]
            self._last_seen[sl] = self.clock
            self._confidence[sl] = conf[fresh]
            self.size = start + n_new
            self._insert_sorted(keys[fresh], torch.arange(start, start + n_new, device=self.device))
            if self.capacity is not None and self.size > self.capacity:
                self._evict()
        return n_new

    def read(self, pose, intrinsics, grid_size, image_size=None, touch: bool = True) -> MemoryReadout:
        """Project memory onto a camera at ``grid_size`` (h, w); the nearest surface wins a
        cell (see ``SURFACE_TOLERANCE``), and cells with no surface show remembered sky
        (mask 1, depth inf).

        ``intrinsics`` are for ``image_size`` (H, W) if given, else for the grid itself.
        With ``touch`` the points that win a cell count as seen now (for eviction). Ties
        (same surface, same offset from the cell centre) go to the lower voxel key, so a
        read does not depend on the order of past writes.
        """
        return read_memories([self], [pose], [intrinsics], grid_size, image_size, touch)[0]

    def _read_is_cached(self, pose: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> bool:
        """Was the last read made at this camera, with memory unchanged since? The world
        reads at the new pose and then writes there, so the write reuses that read."""
        last = self._last_read
        return last is not None and last[2] == grid and torch.equal(last[0], pose) and torch.equal(last[1], k)

    def distance_to(self, point) -> float:
        """Distance (metres) from ``point`` (3,) to the nearest remembered point; inf if empty.

        Exact, over few chunks: the chunk with the nearest centre holds a point within
        ``gap + radius``, so only chunks whose bounding sphere comes that close can hold
        the nearest point.
        """
        return distances_to([self], [point])[0]

    # ------------------------------------------------------------------ stats / state

    @property
    def bytes_per_entry(self) -> int:
        """Bytes an entry occupies, read off the buffers: xyz, latent vector, recency,
        confidence, and its row of the sorted index (key + slot)."""
        buffers = [getattr(self, name) for name in _ENTRY_BUFFERS] + [self._sorted_keys, self._sorted_slots]
        return sum(b.element_size() * math.prod(b.shape[1:]) for b in buffers)

    def stats(self) -> dict:
        """Entries, bytes held by them, by the chunk table (ids, centres) and by the sky dome,
        occupied voxels (one entry per voxel) and sky directions. Spare rows of the doubling
        buffers are not counted."""
        index_bytes = sum(t.numel() * t.element_size() for t in (self._chunks, self._centres))
        total = self.size * self.bytes_per_entry + index_bytes + self.sky.nbytes
        return {"points": self.size, "bytes": total, "voxels": self.size, "sky_directions": len(self.sky)}

    def __len__(self) -> int:
        return self.size

    @property
    def points(self) -> torch.Tensor:
        """(N, 3) world xyz of the remembered entries (a view of the store: do not modify)."""
        return self._xyz[: self.size]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-friendly); config travels separately via :meth:`config`."""
        n = self.size
        xyz = self._xyz[:n].clone()
        return {
            "xyz": xyz,
            "features": self._features[:n].clone(),
            "keys": voxel_keys(xyz, self.voxel_size)[0],
            "last_seen": self._last_seen[:n].long(),
            "confidence": self._confidence[:n].float(),
            "clock": torch.tensor(self.clock, dtype=torch.long),
            **self.sky.state_dict(),
        }

    def config(self) -> dict:
        return {
            "channels": self.channels,
            "voxel_size": self.voxel_size,
            "capacity": self.capacity,
            "depth_pooling": self.depth_pooling,
            "far": self.far,
            "confident": self.confident,
            "feature_dtype": str(self.feature_dtype).removeprefix("torch."),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; validates everything before touching ``self``."""
        expected = {"xyz", "features", "keys", "last_seen", "confidence", "clock"}
        missing = expected - set(state)
        if missing:
            raise ValueError(f"memory state is missing {sorted(missing)}")
        n = state["keys"].shape[0]
        shapes = {
            "xyz": (n, 3),
            "features": (n, self.channels),
            "keys": (n,),
            "last_seen": (n,),
            "confidence": (n,),
            "clock": (),
        }
        for name, shape in shapes.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(f"memory state {name!r} must have shape {shape}, got {tuple(state[name].shape)}")
        features = state["features"].to(self.device, self.feature_dtype)
        if not (torch.isfinite(state["xyz"]).all() and torch.isfinite(features).all()):
            raise ValueError(f"memory state contains NaN or inf (features as {self.feature_dtype})")
        keys, _ = voxel_keys(state["xyz"].float(), self.voxel_size)
        if not torch.equal(keys, state["keys"].long()) or torch.unique(keys).numel() != n:
            raise ValueError("memory state keys do not match its points (corrupt or another voxel_size)")
        sky = SkyDome(self.channels, self.feature_dtype, self.device)
        sky.load_state_dict(state)
        self._alloc(max(n, 1024))
        self.sky = sky
        self._xyz[:n] = state["xyz"].to(self.device, torch.float32)
        self._features[:n] = features
        self._last_seen[:n] = state["last_seen"].to(self.device, torch.int32)
        self._confidence[:n] = state["confidence"].to(self.device, torch.float16)
        self.size = n
        self.clock = int(state["clock"])
        self._reindex()


def _slots_in_views(memories: list[LatentSpatialMemory], poses: torch.Tensor, ks: torch.Tensor, h: int, w: int):
    """:meth:`LatentSpatialMemory._slots_in_view` of memory ``b`` at camera ``b`` (``poses``
    (B, 4, 4), grid intrinsics ``ks`` (B, 3, 3)), all chunks tested at once."""
    device = poses.device
    # the side planes of the frame plus its one-cell ring (the read fills edge holes from
    # points just outside), normals pointing inwards
    rays = ringed_frame_rays(ks, h, w)
    normals = torch.linalg.cross(rays, rays.roll(-1, dims=1), dim=2)
    normals = normals / normals.norm(dim=2, keepdim=True)
    normals = normals * torch.sign((normals * rays.mean(dim=1, keepdim=True)).sum(dim=2, keepdim=True))
    counts = torch.tensor([m._chunks.numel() for m in memories], device=device)
    view = torch.repeat_interleave(torch.arange(len(memories), device=device), counts)
    radius = torch.tensor([m._chunk_radius for m in memories], dtype=torch.float64, device=device)[view]
    centres = torch.cat([m._centres for m in memories])
    cam = ((centres - poses[view, :3, 3])[:, :, None] * poses[view, :3, :3]).sum(dim=1)  # R^T (c - t)
    inside = ((cam[:, None, :] * normals[view]).sum(dim=2) >= -radius[:, None]).all(dim=1)
    visible = (inside & (cam[:, 2] >= _NEAR - radius)).split(counts.tolist())
    return [m._slots_of(m._chunks[v]) for m, v in zip(memories, visible)]


def distances_to(memories: list[LatentSpatialMemory], points) -> list[float]:
    """:meth:`LatentSpatialMemory.distance_to` of memory ``b`` from ``points[b]``, the chunk
    search of all memories done at once."""
    device = memories[0].device
    p = torch.as_tensor(np.asarray(points, dtype=np.float64), device=device).reshape(len(memories), 3)
    counts = [m._chunks.numel() for m in memories]
    view = torch.repeat_interleave(torch.arange(len(memories), device=device), torch.tensor(counts, device=device))
    gap = (torch.cat([m._centres for m in memories]) - p[view]).norm(dim=1)
    radius = torch.tensor([m._chunk_radius for m in memories], dtype=torch.float64, device=device)[view]
    nearest = torch.full((len(memories),), math.inf, dtype=gap.dtype, device=device)
    nearest.scatter_reduce_(0, view, gap, reduce="amin")
    near = (gap - radius <= nearest[view] + radius).split(counts)
    slots = [m._slots_of(m._chunks[n]) for m, n in zip(memories, near)]
    owner = torch.repeat_interleave(torch.arange(len(memories), device=device),
                                    torch.tensor([s.numel() for s in slots], device=device))
    xyz = torch.cat([m._xyz[s] for m, s in zip(memories, slots)])
    squared = torch.full((len(memories),), math.inf, device=device)
    squared.scatter_reduce_(0, owner, ((xyz - p[owner].float()) ** 2).sum(dim=1), reduce="amin")
    return squared.sqrt().tolist()


def landing_offsets(points: torch.Tensor, cells: torch.Tensor, intrinsics: torch.Tensor, poses: torch.Tensor,
                    views: int, height: int, width: int) -> torch.Tensor:
    """(B, 2, h, w): where each shown point projects, from the centre of the cell it fills
    (flat ``cells`` of the stacked grids, cameras at grid resolution), in cells.

    A hole filled from a neighbour takes the mean offset of the cells around it that show
    their own points: it stands for surface stretched between them, so it moves with them.
    """
    n = height * width
    u, v, _ = project_per_point(points, intrinsics, poses, cells // n)
    du, dv = u - (cells % width).float() - 0.5, v - ((cells % n) // width).float() - 0.5
    own = (du.abs() <= 0.5) & (dv.abs() <= 0.5)
    offset = torch.zeros(views * n, 3, device=points.device)
    offset[cells[own]] = torch.stack([du[own], dv[own], torch.ones_like(du[own])], 1)
    offset = offset.view(views, height, width, 3).permute(0, 3, 1, 2)
    around = F.conv2d(offset.reshape(-1, 1, height, width), torch.ones(1, 1, 3, 3, device=points.device), padding=1)
    around = around.view(views, 3, height, width)
    mean = around[:, :2] / around[:, 2:].clamp(min=1)
    hole = torch.zeros(views * n, dtype=torch.bool, device=points.device)
    hole[cells[~own]] = True
    return torch.where(hole.view(views, 1, height, width), mean, offset[:, :2])


def read_memories(memories: list[LatentSpatialMemory], poses, intrinsics, grid_size, image_size=None,
                  touch: bool = True) -> list[MemoryReadout]:
    """:meth:`LatentSpatialMemory.read` of several memories, each at its own camera
    (``poses[b]``, ``intrinsics[b]``), in one splat for all: a batch of worlds reads at
    the cost of one read plus its points, not of B reads. Each readout is exactly what
    the memory's own read gives."""
    if not memories or len(poses) != len(memories) or len(intrinsics) != len(memories):
        raise ValueError(f"need one pose and one intrinsics per memory, got {len(memories)} memories, "
                         f"{len(poses)} poses and {len(intrinsics)} intrinsics")
    device, channels = memories[0].device, memories[0].channels
    h, w = checked_grid(grid_size, "grid_size")
    image = None if image_size is None else checked_grid(image_size, "image_size")
    poses_t, ks = checked_cameras(poses, intrinsics, device)
    if image is not None:
        ks = scale_intrinsics(ks, image, (h, w))
    n, b = h * w, len(memories)
    sky_cells, sky_features = read_domes([m.sky for m in memories], poses_t, ks, (h, w))
    taken = torch.zeros(b * n, dtype=torch.bool, device=device)
    taken[sky_cells] = True
    slots = _slots_in_views(memories, poses_t, ks, h, w)
    counts = torch.tensor([s.numel() for s in slots], device=device)
    xyz = torch.cat([m._xyz[s] for m, s in zip(memories, slots)])
    view = torch.repeat_interleave(torch.arange(b, device=device), counts)
    cells, index, depth = splat_nearest(xyz, ks.float(), poses_t.float(), h, w, near=_NEAR,
                                        depth_tolerance=SURFACE_TOLERANCE, fill_holes=True, taken=taken, view=view)
    # cells ascend, so each memory's winners are one run of them
    bounds = torch.searchsorted(cells, torch.arange(b + 1, device=device) * n).tolist()
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    features = torch.zeros(b * n, channels, device=device)
    for i, m in enumerate(memories):
        run = slice(bounds[i], bounds[i + 1])
        points = slots[i][index[run] - starts[i]]
        features[cells[run]] = m._features[points].float()
        if touch:
            m._last_seen[points] = m.clock
    mask = torch.zeros(b * n, device=device)
    mask[cells] = 1.0
    depth_map = torch.full((b * n,), float("inf"), device=device)
    depth_map[cells] = depth
    open_sky = mask[sky_cells] == 0  # geometry in front of remembered sky hides it
    features[sky_cells[open_sky]] = sky_features[open_sky]
    mask[sky_cells[open_sky]] = 1.0
    features = features.view(b, n, channels).transpose(1, 2).reshape(b, channels, h, w)
    mask, depth_map = mask.view(b, 1, h, w), depth_map.view(b, 1, h, w)
    offset = landing_offsets(xyz[index], cells, ks.float(), poses_t.float(), b, h, w)
    readouts = []
    for i, m in enumerate(memories):
        readout = MemoryReadout(features=features[i], mask=mask[i], depth=depth_map[i], offset=offset[i])
        # copies: the caller's arrays (which the pose and intrinsics may share) and readout may change
        m._last_read = (poses_t[i].clone(), ks[i].clone(), (h, w), readout.mask.clone(), readout.depth.clone())
        readouts.append(readout)
    return readouts


def write_memories(memories: list[LatentSpatialMemory], features: torch.Tensor, depth: torch.Tensor, poses,
                   intrinsics, keep_mask: torch.Tensor, confidence: torch.Tensor,
                   reject_closer_than_memory: float | None = None,
                   skip_cells: torch.Tensor | None = None) -> list[WriteResult]:
    """:meth:`LatentSpatialMemory.write` of B frames, frame ``b`` into memory ``b``, with
    the arguments stacked: ``features`` (B, C, h, w), ``depth`` and ``keep_mask`` (B, H, W)
    (checked by the caller), ``poses`` and ``intrinsics`` one per frame, ``confidence``
    (B, h, w), ``skip_cells`` (B, h, w) or None. Pooling, filtering and lifting run once
    for all frames; only the merge into each memory's index runs per memory."""
    first = memories[0]
    device = first.device
    shared = ("channels", "device", "feature_dtype", "depth_pooling", "voxel_size")
    if any(getattr(m, a) != getattr(first, a) for m in memories for a in shared):
        raise ValueError(f"memories written together must share {', '.join(shared)}")
    b, h, w = len(memories), *features.shape[-2:]
    if tuple(features.shape) != (b, first.channels, h, w):
        raise ValueError(f"features must have shape ({b}, {first.channels}, h, w), got {tuple(features.shape)}")
    if depth.ndim != 3 or depth.shape[0] != b or keep_mask.shape != depth.shape:
        raise ValueError(f"depth and keep_mask must have one (H, W) map per memory, got {tuple(depth.shape)} "
                         f"and {tuple(keep_mask.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or inf")
    stored = features.to(first.feature_dtype)
    if not torch.isfinite(stored).all():
        raise ValueError(f"features overflow their {first.feature_dtype} storage")
    poses_t, ks = checked_cameras(poses, intrinsics, device)
    grid = (h, w)
    far = torch.tensor([m.far for m in memories], device=device)[:, None, None]
    sky = ~(depth < far)
    pooled, static = pool_depth(depth, keep_mask & ~sky, grid, first.depth_pooling, ignore=sky)
    k_grid = scale_intrinsics(ks, tuple(depth.shape[-2:]), grid)
    cell_keep = static.clone()
    fy, fx = depth.shape[-2] // h, depth.shape[-1] // w
    clean = (keep_mask | sky).view(b, h, fy, w, fx).all(4).all(2)
    sky_cells = clean & ~static  # mostly sky, nothing moving
    if skip_cells is not None:
        cell_keep &= ~skip_cells
        sky_cells &= ~skip_cells
    if reject_closer_than_memory is not None:  # against memory as it was before this frame
        stale = [i for i, m in enumerate(memories) if not m._read_is_cached(poses_t[i], k_grid[i], grid)]
        if stale:
            read_memories([memories[i] for i in stale], poses_t[stale], k_grid[stale], grid, touch=False)
        seen_mask = torch.stack([m._last_read[3] for m in memories])
        seen_depth = torch.stack([m._last_read[4] for m in memories])
        closer = pooled < seen_depth[:, 0] * (1.0 - reject_closer_than_memory)
        cell_keep &= ~(closer & (seen_mask[:, 0] > 0))
    for i in torch.nonzero(sky_cells.flatten(1).any(1), as_tuple=True)[0].tolist():
        if memories[i].sky.write(stored[i], sky_cells[i], poses_t[i], k_grid[i]):
            memories[i]._last_read = None
    lifted = unproject_depth(pooled.double(), k_grid, poses_t).float()
    keys, in_range = chunk_major_keys(lifted.reshape(-1, 3), first.voxel_size)
    keys, in_range = keys.view(b, h, w), in_range.view(b, h, w)
    cell_keep &= in_range
    # select for all frames at once, then split per memory
    per_frame = cell_keep.flatten(1).sum(dim=1).tolist()
    kept = (t[cell_keep].split(per_frame) for t in (keys, lifted, stored.permute(0, 2, 3, 1), confidence, pooled))
    static_xyz = lifted[static].split(static.flatten(1).sum(dim=1).tolist())
    results = []
    for m, new, xyz, cells in zip(memories, zip(*kept), static_xyz, static):
        m.clock += 1
        results.append(WriteResult(added=m._store(*new), static_xyz=xyz, static_cells=cells))
    return results
