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

A :class:`LatentMemoryBank` holds the memories of all B worlds of a batched world and
reads, writes and queries them in one call each (one splat for all reads); a
:class:`LatentSpatialMemory` is the bank of one world with per-frame calls.

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

from mirage_gym.constants import FAR, MEMORY_CAPACITY, VOXEL_SIZE
from mirage_gym.geometry import project_per_point, ringed_frame_rays, scale_intrinsics, splat_nearest, unproject_depth
from mirage_gym.memory.base import (
    MemoryReadout,
    OneWorldMemory,
    WriteResult,
    checked_cameras,
    checked_grid,
    checked_readout,
    checked_worlds,
    pool_depth,
)
from mirage_gym.memory.sky import SkyDome, read_domes
from mirage_gym.memory.voxels import (
    CHUNK_BITS,
    LOCAL_BITS,
    chunk_centres,
    chunk_major_keys,
    find,
    merge_sorted,
    one_per_voxel,
    voxel_keys,
)

_NO_SLOT = -1
_NEAR = 1e-3  # metres: points closer to the camera plane are not read
# points within this fraction of a cell's nearest depth are one surface; the one landing
# closest to the cell centre shows (at a revisited pose, the cell's own point)
SURFACE_TOLERANCE = 0.25
_ENTRY_BUFFERS = ("xyz", "features", "last_seen", "confidence")

__all__ = ["LatentMemoryBank", "LatentSpatialMemory", "SURFACE_TOLERANCE", "WriteResult", "chunk_major_keys",
           "landing_offsets", "voxel_keys"]


class _WorldEntries:
    """The entries of one world of a :class:`LatentMemoryBank` (only the bank touches them)."""

    def __init__(self, bank: LatentMemoryBank, rows: int = 1024):
        dev = bank.device
        self.bank = bank
        self.xyz = torch.zeros(rows, 3, device=dev)
        self.features = torch.zeros(rows, bank.channels, dtype=bank.feature_dtype, device=dev)
        self.last_seen = torch.zeros(rows, dtype=torch.int32, device=dev)
        self.confidence = torch.zeros(rows, dtype=torch.float16, device=dev)
        # chunk-major keys of all entries, sorted, and their slots: O(M log N) look-ups of a
        # frame's M keys, and each chunk's entries as one range
        self.sorted_keys = torch.zeros(0, dtype=torch.long, device=dev)
        self.sorted_slots = torch.zeros(0, dtype=torch.int32, device=dev)
        self.set_chunks(torch.zeros(0, dtype=torch.long, device=dev))
        self.sky = SkyDome(bank.channels, bank.feature_dtype, dev)
        self.size = 0
        self.clock = 0

    def grow(self, needed: int) -> None:
        rows = self.xyz.shape[0]
        if needed <= rows:
            return
        new_rows = max(needed, 2 * rows)
        for name in _ENTRY_BUFFERS:
            old = getattr(self, name)
            new = torch.zeros((new_rows,) + tuple(old.shape[1:]), dtype=old.dtype, device=old.device)
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def reindex(self) -> None:
        keys, _ = chunk_major_keys(self.xyz[: self.size], self.bank.voxel_size)
        self.sorted_keys, order = torch.sort(keys)
        self.sorted_slots = order.to(torch.int32)
        self.set_chunks(torch.unique_consecutive(self.sorted_keys >> LOCAL_BITS))

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """Slot of each key, or ``_NO_SLOT``."""
        pos, hit = find(self.sorted_keys, keys)
        if not hit.any():
            return torch.full_like(keys, _NO_SLOT)
        slots = self.sorted_slots[pos.clamp(max=self.sorted_keys.numel() - 1)].long()
        return torch.where(hit, slots, torch.full_like(keys, _NO_SLOT))

    def insert_sorted(self, keys: torch.Tensor, slots: torch.Tensor) -> None:
        """Merge new keys (sorted, unique, absent) and their slots into the sorted index."""
        self.sorted_keys, (self.sorted_slots,) = merge_sorted(self.sorted_keys, keys,
                                                              values=((self.sorted_slots, slots),))
        self.set_chunks(torch.unique(torch.cat([self.chunks, keys >> LOCAL_BITS])))

    def evict(self) -> None:
        """Drop the least recently seen entries down to 90% of capacity (batched, so rare)."""
        keep_n = int(self.bank.capacity * 0.9)
        order = torch.argsort(self.last_seen[: self.size], descending=True, stable=True)
        keep = torch.sort(order[:keep_n]).values
        for name in _ENTRY_BUFFERS:
            buf = getattr(self, name)
            buf[:keep_n] = buf[keep]
        self.size = keep_n
        self.reindex()

    def set_chunks(self, chunks: torch.Tensor) -> None:
        """The occupied chunk ids (sorted) and their world centres (K, 3) float64."""
        self.chunks = chunks
        self.centres = chunk_centres(chunks, self.bank.voxel_size)

    def slots_of(self, chunks: torch.Tensor) -> torch.Tensor:
        """Slots of every entry in ``chunks`` (sorted ids), in key order: each chunk is one
        range of the sorted index, so this is a subsequence of ``sorted_slots``."""
        lo = torch.searchsorted(self.sorted_keys, chunks << LOCAL_BITS)
        hi = torch.searchsorted(self.sorted_keys, (chunks + 1) << LOCAL_BITS)
        counts = hi - lo
        starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
        positions = starts + torch.arange(starts.numel(), device=self.xyz.device)
        return self.sorted_slots[positions].long()

    def store(self, keys: torch.Tensor, xyz: torch.Tensor, feats: torch.Tensor, conf: torch.Tensor,
              cell_depth: torch.Tensor) -> int:
        """Merge lifted cells (chunk-major ``keys``, points, stored-dtype features,
        confidence, depth; all in hashable range) into the entries; returns how many are new."""
        if xyz.shape[0] == 0:
            return 0
        # one candidate per voxel within the frame: the most confident, then the nearest
        keys, pick = one_per_voxel(keys, cell_depth - 1e6 * conf)
        xyz, feats = xyz[pick], feats[pick]
        conf = conf[pick].to(self.confidence.dtype)  # compared as stored

        slots = self.lookup(keys)
        known = slots != _NO_SLOT
        known_slots = slots[known]
        self.last_seen[known_slots] = self.clock
        upgrade = (self.confidence[known_slots] < self.bank.confident) & (conf[known] > self.confidence[known_slots])
        up_slots = known_slots[upgrade]
        self.xyz[up_slots] = xyz[known][upgrade]
        self.features[up_slots] = feats[known][upgrade]
        self.confidence[up_slots] = conf[known][upgrade]

        fresh = ~known
        n_new = int(fresh.sum())
        if n_new:
            start = self.size
            self.grow(start + n_new)
            sl = slice(start, start + n_new)
            self.xyz[sl] = xyz[fresh]
            self.features[sl] = feats[fresh]
            self.last_seen[sl] = self.clock
            self.confidence[sl] = conf[fresh]
            self.size = start + n_new
            self.insert_sorted(keys[fresh], torch.arange(start, start + n_new, device=self.xyz.device))
            if self.bank.capacity is not None and self.size > self.bank.capacity:
                self.evict()
        return n_new


class LatentMemoryBank:
    """Bounded 3D memories of latent vectors, one per world, read at latent resolution.

    Implements :class:`~mirage_gym.memory.base.SpatialMemory`: every world's entries are
    owned here, and a read, a write or a distance query for several worlds is one call
    (one splat for all reads). All worlds share the configuration below.

    Args:
        num_worlds: how many worlds' memories the bank holds.
        channels: latent channels C of every written feature grid.
        voxel_size: edge of a hash voxel in metres; one entry per voxel.
        capacity: most entries kept per world; beyond it the least recently seen are
            evicted (``None`` for unbounded).
        depth_pooling: ``"area"`` (mean, Mirage's choice) or ``"median"``.
        far: points at or beyond this depth (metres) are sky: they go to the sky dome.
        confident: confidence at or above which a written entry is final; a less
            confident entry is replaced by a later, more confident write of its voxel.
        feature_dtype: storage dtype of latent vectors; float16 halves memory, float32
            keeps reads bit-exact. Reads always return float32.
        device: where all tensors live.
    """

    stores = "latents"  # what reads return and writes take: latent grids

    def __init__(
        self,
        num_worlds: int,
        channels: int,
        voxel_size: float = VOXEL_SIZE,
        capacity: int | None = MEMORY_CAPACITY,
        depth_pooling: str = "area",
        far: float = FAR,
        confident: float = 0.5,
        feature_dtype: torch.dtype = torch.float16,
        device: str | torch.device = "cpu",
    ):
        if int(num_worlds) <= 0:
            raise ValueError(f"num_worlds must be positive, got {num_worlds}")
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
        self.num_worlds = int(num_worlds)
        self.channels = int(channels)
        self.voxel_size = float(voxel_size)
        self.capacity = None if capacity is None else int(capacity)
        self.depth_pooling = depth_pooling
        self.far = float(far)
        self.confident = float(confident)
        self.feature_dtype = feature_dtype
        self.device = torch.device(device)
        # bounding-sphere radius of a chunk, 5% over so float rounding never culls a point in view
        self.chunk_radius = 1.05 * 0.5 * math.sqrt(3.0) * (1 << CHUNK_BITS) * self.voxel_size
        self._worlds = [_WorldEntries(self) for _ in range(self.num_worlds)]

    # ------------------------------------------------------------------ per world

    def reset(self, index: int) -> None:
        """Forget everything world ``index`` remembers."""
        self._worlds[index] = _WorldEntries(self)

    def size(self, index: int) -> int:
        """Entries world ``index`` holds."""
        return self._worlds[index].size

    def points(self, index: int) -> torch.Tensor:
        """(N, 3) world xyz of world ``index``'s entries (a view of the store: do not modify)."""
        w = self._worlds[index]
        return w.xyz[: w.size]

    def sky(self, index: int) -> SkyDome:
        """World ``index``'s sky dome."""
        return self._worlds[index].sky

    def tick(self, index: int, clock: int | None = None) -> int:
        """World ``index``'s write clock (the recency unit of eviction); sets it if given."""
        if clock is not None:
            self._worlds[index].clock = int(clock)
        return self._worlds[index].clock

    @property
    def bytes_per_entry(self) -> int:
        """Bytes an entry occupies, read off the buffers: xyz, latent vector, recency,
        confidence, and its row of the sorted index (key + slot)."""
        w = self._worlds[0]
        buffers = [getattr(w, name) for name in _ENTRY_BUFFERS] + [w.sorted_keys, w.sorted_slots]
        return sum(b.element_size() * math.prod(b.shape[1:]) for b in buffers)

    def stats(self, index: int) -> dict:
        """World ``index``'s entries, bytes held by them, by the chunk table (ids, centres)
        and by the sky dome, occupied voxels (one entry per voxel) and sky directions.
        Spare rows of the doubling buffers are not counted."""
        w = self._worlds[index]
        index_bytes = sum(t.numel() * t.element_size() for t in (w.chunks, w.centres))
        total = w.size * self.bytes_per_entry + index_bytes + w.sky.nbytes
        return {"points": w.size, "bytes": total, "voxels": w.size, "sky_directions": len(w.sky)}

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

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """World ``index``'s tensors only (safetensors-friendly); config travels via :meth:`config`."""
        w = self._worlds[index]
        n = w.size
        xyz = w.xyz[:n].clone()
        return {
            "xyz": xyz,
            "features": w.features[:n].clone(),
            "keys": voxel_keys(xyz, self.voxel_size)[0],
            "last_seen": w.last_seen[:n].long(),
            "confidence": w.confidence[:n].float(),
            "clock": torch.tensor(w.clock, dtype=torch.long),
            **w.sky.state_dict(),
        }

    def load_state_dict(self, index: int, state: dict[str, torch.Tensor]) -> None:
        """Restore world ``index`` from :meth:`state_dict`; validates everything before
        touching the bank."""
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
        w = _WorldEntries(self, max(n, 1024))
        w.sky.load_state_dict(state)
        w.xyz[:n] = state["xyz"].to(self.device, torch.float32)
        w.features[:n] = features
        w.last_seen[:n] = state["last_seen"].to(self.device, torch.int32)
        w.confidence[:n] = state["confidence"].to(self.device, torch.float16)
        w.size = n
        w.clock = int(state["clock"])
        w.reindex()
        self._worlds[index] = w

    # ------------------------------------------------------------------ batched queries

    def _slots_in_views(self, worlds: list[int], poses: torch.Tensor, ks: torch.Tensor, h: int, w: int):
        """Slots of the entries of world ``worlds[b]`` in chunks whose bounding sphere meets
        the frustum of camera ``b`` (``poses`` (B, 4, 4), grid intrinsics ``ks`` (B, 3, 3)),
        a superset of the points that land in it; all chunks tested at once."""
        device = poses.device
        stores = [self._worlds[i] for i in worlds]
        # the side planes of the frame plus its one-cell ring (the read fills edge holes from
        # points just outside), normals pointing inwards
        rays = ringed_frame_rays(ks, h, w)
        normals = torch.linalg.cross(rays, rays.roll(-1, dims=1), dim=2)
        normals = normals / normals.norm(dim=2, keepdim=True)
        normals = normals * torch.sign((normals * rays.mean(dim=1, keepdim=True)).sum(dim=2, keepdim=True))
        counts = torch.tensor([s.chunks.numel() for s in stores], device=device)
        view = torch.repeat_interleave(torch.arange(len(stores), device=device), counts)
        centres = torch.cat([s.centres for s in stores])
        cam = ((centres - poses[view, :3, 3])[:, :, None] * poses[view, :3, :3]).sum(dim=1)  # R^T (c - t)
        radius = self.chunk_radius
        inside = ((cam[:, None, :] * normals[view]).sum(dim=2) >= -radius).all(dim=1)
        visible = (inside & (cam[:, 2] >= _NEAR - radius)).split(counts.tolist())
        return [s.slots_of(s.chunks[v]) for s, v in zip(stores, visible)]

    def distances(self, points, worlds=None) -> list[float]:
        """Distance (metres) from ``points[b]`` (3,) to the nearest point world ``worlds[b]``
        remembers (inf if it is empty); ``worlds`` defaults to all.

        Exact, over few chunks: the chunk with the nearest centre holds a point within
        ``gap + radius``, so only chunks whose bounding sphere comes that close can hold
        the nearest point. The chunk search of all worlds is done at once.
        """
        worlds = checked_worlds(worlds, self.num_worlds)
        stores = [self._worlds[i] for i in worlds]
        device, b = self.device, len(stores)
        p = torch.as_tensor(np.asarray(points, dtype=np.float64), device=device).reshape(b, 3)
        counts = [s.chunks.numel() for s in stores]
        view = torch.repeat_interleave(torch.arange(b, device=device), torch.tensor(counts, device=device))
        gap = (torch.cat([s.centres for s in stores]) - p[view]).norm(dim=1)
        radius = self.chunk_radius
        nearest = torch.full((b,), math.inf, dtype=gap.dtype, device=device)
        nearest.scatter_reduce_(0, view, gap, reduce="amin")
        near = (gap - radius <= nearest[view] + radius).split(counts)
        slots = [s.slots_of(s.chunks[n]) for s, n in zip(stores, near)]
        owner = torch.repeat_interleave(torch.arange(b, device=device),
                                        torch.tensor([s.numel() for s in slots], device=device))
        xyz = torch.cat([s.xyz[i] for s, i in zip(stores, slots)])
        squared = torch.full((b,), math.inf, device=device)
        squared.scatter_reduce_(0, owner, ((xyz - p[owner].float()) ** 2).sum(dim=1), reduce="amin")
        return squared.sqrt().tolist()

    def read(self, poses, intrinsics, grid_size, image_size=None, touch: bool = True, worlds=None) -> MemoryReadout:
        """Project the memory of world ``worlds[b]`` (default: all) onto camera ``b``
        (``poses[b]``, ``intrinsics[b]``) at ``grid_size`` (h, w), all in one splat; returns
        one :class:`MemoryReadout` with (B, ...) tensors.

        The nearest surface wins a cell (see ``SURFACE_TOLERANCE``), and cells with no
        surface show remembered sky (mask 1, depth inf). ``intrinsics`` are for
        ``image_size`` (H, W) if given, else for the grid itself. With ``touch`` the points
        that win a cell count as seen now (for eviction). Ties (same surface, same offset
        from the cell centre) go to the lower voxel key, so a read does not depend on the
        order of past writes.
        """
        worlds = checked_worlds(worlds, self.num_worlds)
        if len(poses) != len(worlds) or len(intrinsics) != len(worlds):
            raise ValueError(f"need one pose and one intrinsics per world, got {len(worlds)} worlds, "
                             f"{len(poses)} poses and {len(intrinsics)} intrinsics")
        device, channels = self.device, self.channels
        stores = [self._worlds[i] for i in worlds]
        h, w = checked_grid(grid_size, "grid_size")
        image = None if image_size is None else checked_grid(image_size, "image_size")
        poses_t, ks = checked_cameras(poses, intrinsics, device)
        if image is not None:
            ks = scale_intrinsics(ks, image, (h, w))
        n, b = h * w, len(stores)
        sky_cells, sky_features = read_domes([s.sky for s in stores], poses_t, ks, (h, w))
        taken = torch.zeros(b * n, dtype=torch.bool, device=device)
        taken[sky_cells] = True
        slots = self._slots_in_views(worlds, poses_t, ks, h, w)
        counts = torch.tensor([s.numel() for s in slots], device=device)
        xyz = torch.cat([s.xyz[i] for s, i in zip(stores, slots)])
        view = torch.repeat_interleave(torch.arange(b, device=device), counts)
        cells, index, depth = splat_nearest(xyz, ks.float(), poses_t.float(), h, w, near=_NEAR,
                                            depth_tolerance=SURFACE_TOLERANCE, fill_holes=True, taken=taken, view=view)
        # cells ascend, so each world's winners are one run of them
        bounds = torch.searchsorted(cells, torch.arange(b + 1, device=device) * n).tolist()
        starts = (torch.cumsum(counts, 0) - counts).tolist()
        features = torch.zeros(b * n, channels, device=device)
        for i, s in enumerate(stores):
            run = slice(bounds[i], bounds[i + 1])
            points = slots[i][index[run] - starts[i]]
            features[cells[run]] = s.features[points].float()
            if touch:
                s.last_seen[points] = s.clock
        mask = torch.zeros(b * n, device=device)
        mask[cells] = 1.0
        depth_map = torch.full((b * n,), float("inf"), device=device)
        depth_map[cells] = depth
        open_sky = mask[sky_cells] == 0  # geometry in front of remembered sky hides it
        features[sky_cells[open_sky]] = sky_features[open_sky]
        mask[sky_cells[open_sky]] = 1.0
        # contiguous: the generator's output follows this layout, and the decoder's convolutions
        # give other roundings on a channels-last one
        features = features.view(b, n, channels).transpose(1, 2).contiguous().view(b, channels, h, w)
        offset = landing_offsets(xyz[index], cells, ks.float(), poses_t.float(), b, h, w)
        return MemoryReadout(features=features, mask=mask.view(b, 1, h, w), depth=depth_map.view(b, 1, h, w),
                             offset=offset)

    def write(self, features: torch.Tensor, depth: torch.Tensor, poses, intrinsics, keep_mask: torch.Tensor,
              confidence: torch.Tensor, readout: MemoryReadout | None = None,
              residual_tolerance: float | None = None, skip_cells: torch.Tensor | None = None,
              worlds=None) -> list[WriteResult]:
        """Lift frame ``b`` to 3D and store it in world ``worlds[b]`` (default: all).

        Args:
            features: (B, C, h, w) latent grids.
            depth: (B, H, W) z-depth at image resolution, ``inf`` for sky; (H, W) must be a
                whole multiple of (h, w). It is pooled onto the latent grid.
            poses, intrinsics: one 4x4 camera-to-world and one 3x3 intrinsics of the (H, W)
                grid per frame.
            keep_mask: (B, H, W) bool, False for pixels not to remember (sky, dynamic
                objects). A latent cell is written only if all its pixels are kept or
                sky, at least half of them surface (see ``pool_depth``).
            confidence: (B, h, w) in [0, 1]; known depth is 1, predicted less.
            readout: the memory as read at these cameras and grid before this write
                (:meth:`read`), for the residual check; read here (without touching) if
                the check is on and none is given.
            residual_tolerance: if set, a cell whose depth is closer than the remembered
                surface there by more than this fraction is not written: it is likely a
                moving object in front of static memory (a reprojection residual check).
            skip_cells: (B, h, w) bool of cells not to write (e.g. cells the frame copied
                from memory), though they still count as seen.

        A cell that is more than half sky (depth inf or at least ``far``; a moving object
        always has a depth) and otherwise kept goes to the sky dome, by direction, not to
        the 3D memory. Pooling, filtering and lifting run once for all frames; only the
        merge into each world's index runs per world.
        """
        worlds = checked_worlds(worlds, self.num_worlds)
        device = self.device
        b, h, w = len(worlds), *features.shape[-2:]
        if tuple(features.shape) != (b, self.channels, h, w):
            raise ValueError(f"features must have shape ({b}, {self.channels}, h, w), got {tuple(features.shape)}")
        if depth.ndim != 3 or depth.shape[0] != b or keep_mask.shape != depth.shape:
            raise ValueError(f"depth and keep_mask must have one (H, W) map per world, got {tuple(depth.shape)} "
                             f"and {tuple(keep_mask.shape)}")
        if tuple(confidence.shape) != (b, h, w):
            raise ValueError(f"confidence must have shape ({b}, {h}, {w}), got {tuple(confidence.shape)}")
        if skip_cells is not None and tuple(skip_cells.shape) != (b, h, w):
            raise ValueError(f"skip_cells must have shape ({b}, {h}, {w}), got {tuple(skip_cells.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or inf")
        stored = features.to(device, self.feature_dtype)
        if not torch.isfinite(stored).all():
            raise ValueError(f"features overflow their {self.feature_dtype} storage")
        depth, keep_mask = depth.to(device), keep_mask.to(device)
        poses_t, ks = checked_cameras(poses, intrinsics, device)
        grid = (h, w)
        sky = ~(depth < self.far)
        pooled, static = pool_depth(depth, keep_mask & ~sky, grid, self.depth_pooling, ignore=sky)
        k_grid = scale_intrinsics(ks, tuple(depth.shape[-2:]), grid)
        cell_keep = static.clone()
        fy, fx = depth.shape[-2] // h, depth.shape[-1] // w
        clean = (keep_mask | sky).view(b, h, fy, w, fx).all(4).all(2)
        sky_cells = clean & ~static  # mostly sky, nothing moving
        if skip_cells is not None:
            cell_keep &= ~skip_cells.to(device)
            sky_cells &= ~skip_cells.to(device)
        if residual_tolerance is not None:  # against memory as it was before this frame
            if readout is None:
                readout = self.read(poses_t, k_grid, grid, touch=False, worlds=worlds)
            checked_readout(readout, b, grid)
            closer = pooled < readout.depth[:, 0] * (1.0 - residual_tolerance)
            cell_keep &= ~(closer & (readout.mask[:, 0] > 0))
        for i in torch.nonzero(sky_cells.flatten(1).any(1), as_tuple=True)[0].tolist():
            self._worlds[worlds[i]].sky.write(stored[i], sky_cells[i], poses_t[i], k_grid[i])
        lifted = unproject_depth(pooled.double(), k_grid, poses_t).float()
        keys, in_range = chunk_major_keys(lifted.reshape(-1, 3), self.voxel_size)
        keys, in_range = keys.view(b, h, w), in_range.view(b, h, w)
        cell_keep &= in_range
        # select for all frames at once, then split per world
        per_frame = cell_keep.flatten(1).sum(dim=1).tolist()
        kept = (t[cell_keep].split(per_frame) for t in (keys, lifted, stored.permute(0, 2, 3, 1), confidence.to(device),
                                                         pooled))
        static_xyz = lifted[static].split(static.flatten(1).sum(dim=1).tolist())
        results = []
        for i, new, xyz, cells in zip(worlds, zip(*kept), static_xyz, static):
            store = self._worlds[i]
            store.clock += 1
            results.append(WriteResult(added=store.store(*new), static_xyz=xyz, static_cells=cells))
        return results


class LatentSpatialMemory(OneWorldMemory):
    """The latent memory of one world: a :class:`LatentMemoryBank` of one world with
    per-frame calls (``read(pose, ...)``, ``write(features, depth, pose, ...)``); takes the
    bank's arguments but ``num_worlds``."""

    def __init__(self, channels: int, **config):
        super().__init__(LatentMemoryBank(1, channels, **config))

    @property
    def sky(self) -> SkyDome:
        return self.bank.sky(0)

    @property
    def clock(self) -> int:
        return self.bank.tick(0)

    @clock.setter
    def clock(self, value: int) -> None:
        self.bank.tick(0, value)

    @property
    def bytes_per_entry(self) -> int:
        return self.bank.bytes_per_entry

    def slots_in_view(self, pose, k, h: int, w: int) -> torch.Tensor:
        """Slots of the entries in chunks whose bounding sphere meets the frustum of an
        ``h x w`` grid with intrinsics ``k`` (a superset of the points that land in it)."""
        poses_t, ks = checked_cameras([pose], [k], self.bank.device)
        return self.bank._slots_in_views([0], poses_t, ks, h, w)[0]


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
