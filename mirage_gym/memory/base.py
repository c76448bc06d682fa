"""What every spatial memory shares: the :class:`SpatialMemory` protocol a world uses, the
readout and write-result types, the single-world view of a bank, input checks and depth
pooling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from mirage_gym.geometry import check_intrinsics, check_pose


@dataclass
class MemoryReadout:
    """Memory projected onto cameras: one camera (``(C, h, w)`` tensors) or a batch
    (a leading B axis), as a bank's read returns it.

    ``features`` (C, h, w) are zero where invalid, ``mask`` (1, h, w) is 1.0 where a
    remembered point landed (or remembered sky shows), ``depth`` (1, h, w) is its
    z-depth (``inf`` where invalid or sky).
    """

    features: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    offset: torch.Tensor | None = None  # (2, h, w) where each point lands from its cell's centre, in cells

    @property
    def coverage(self) -> float:
        """Share of the grid covered by memory."""
        return float(self.mask.mean())

    def __getitem__(self, index: int) -> MemoryReadout:
        """Camera ``index`` of a batched readout."""
        return MemoryReadout(self.features[index], self.mask[index], self.depth[index],
                             None if self.offset is None else self.offset[index])

    def batched(self) -> MemoryReadout:
        """A one-camera readout as a batch of one."""
        return MemoryReadout(self.features[None], self.mask[None], self.depth[None],
                             None if self.offset is None else self.offset[None])


@dataclass
class WriteResult:
    """What a write did: ``added`` new entries; ``static_xyz`` (M, 3) the lifted points of
    every static cell of the frame, written or not (explored-space bookkeeping uses them)."""

    added: int
    static_xyz: torch.Tensor
    static_cells: torch.Tensor | None = None  # (h, w) bool: the cells behind ``static_xyz``


class SpatialMemory(Protocol):
    """What a :class:`~mirage_gym.world.World` needs of its memory: the state of all its
    worlds, read, written and queried in batches. ``worlds`` (a list of world indices,
    default all) says which worlds a batched call is about; row ``b`` of its arguments
    belongs to world ``worlds[b]``.

    ``stores`` says what the memory holds and gives back: ``"latents"`` (feature grids at
    latent resolution; the generator takes the read as is) or ``"pixels"`` (RGB at image
    resolution; the world re-encodes the read with its codec and writes decoded frames).
    """

    num_worlds: int
    stores: str
    device: torch.device

    def read(self, poses, intrinsics, grid_size, image_size=None, touch: bool = True,
             worlds=None) -> MemoryReadout:
        """Memory of each world projected onto its camera, as one batched readout."""

    def write(self, features: torch.Tensor, depth: torch.Tensor, poses, intrinsics, keep_mask: torch.Tensor,
              confidence: torch.Tensor, readout: MemoryReadout | None = None,
              residual_tolerance: float | None = None, skip_cells: torch.Tensor | None = None,
              worlds=None) -> list[WriteResult]:
        """Store one frame per world. ``readout`` is the read made at these cameras before
        the write (the residual check compares against it); nothing is cached between
        a read and a write."""

    def distances(self, points, worlds=None) -> list[float]:
        """Distance from each world's point to the nearest point it remembers (inf if none)."""

    def reset(self, index: int) -> None: ...

    def size(self, index: int) -> int: ...

    def points(self, index: int) -> torch.Tensor: ...

    def stats(self, index: int) -> dict: ...

    def state_dict(self, index: int) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, index: int, state: dict[str, torch.Tensor]) -> None: ...


class OneWorldMemory:
    """A memory of one world with per-frame calls: a bank (:class:`SpatialMemory`) of one
    world, its inputs checked here (the public boundary) before the batched call."""

    def __init__(self, bank: SpatialMemory):
        self.bank = bank

    def __getattr__(self, name: str):
        if name == "bank":  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.bank, name)  # the bank's configuration (channels, voxel_size, far, ...)

    def read(self, pose, intrinsics, grid_size, image_size=None, touch: bool = True) -> MemoryReadout:
        """Project memory onto one camera at ``grid_size`` (h, w); see the bank's ``read``."""
        return self.bank.read([pose], [intrinsics], grid_size, image_size, touch)[0]

    def write(self, features, depth, pose, intrinsics, keep_mask=None, confidence=1.0,
              readout: MemoryReadout | None = None, reject_closer_than_memory: float | None = None,
              skip_cells=None) -> WriteResult:
        """Store one frame; see the bank's ``write``.

        Args:
            features: (C, h, w) grid of what the memory stores.
            depth: (H, W) z-depth, ``inf`` for sky.
            pose: 4x4 camera-to-world of the frame.
            intrinsics: 3x3 intrinsics of the (H, W) depth grid.
            keep_mask: (H, W) bool, False for pixels not to remember (sky, dynamic objects).
            confidence: scalar or (h, w) in [0, 1]; known depth is 1, predicted less.
            readout: :meth:`read` at this camera and grid before the write (for the
                residual check; read here if the check is on and none is given).
            reject_closer_than_memory: the residual check's tolerance (None: off).
            skip_cells: optional (h, w) bool of cells not to write, though they count as seen.
        """
        device = self.bank.device
        feats = as_tensor(features, "features", device, None)
        if feats.dtype != torch.uint8:  # colour may come as uint8; everything else as float32
            feats = feats.float()
        if feats.ndim != 3:
            raise ValueError(f"features must have shape (C, h, w), got {tuple(feats.shape)}")
        grid = tuple(feats.shape[1:])
        d = checked_depth(depth, device)
        keep = checked_keep_mask(keep_mask, d.shape, device)
        conf = as_tensor(confidence, "confidence", device, torch.float32)
        if conf.ndim == 0:
            conf = conf.expand(grid)
        if tuple(conf.shape) != grid or not torch.isfinite(conf).all():
            raise ValueError(f"confidence must be a finite scalar or have shape {grid}")
        skip = None
        if skip_cells is not None:
            skip = torch.as_tensor(skip_cells, device=device).bool()
            if tuple(skip.shape) != grid:
                raise ValueError(f"skip_cells must have shape {grid}, got {tuple(skip.shape)}")
            skip = skip[None]
        return self.bank.write(feats[None], d[None], [pose], [intrinsics], keep[None], conf[None],
                               None if readout is None else readout.batched(), reject_closer_than_memory, skip)[0]

    def distance_to(self, point) -> float:
        """Distance (metres) from ``point`` (3,) to the nearest remembered point; inf if empty."""
        return self.bank.distances([point])[0]

    def clear(self) -> None:
        """Forget everything."""
        self.bank.reset(0)

    def __len__(self) -> int:
        return self.bank.size(0)

    @property
    def size(self) -> int:
        return self.bank.size(0)

    @property
    def points(self) -> torch.Tensor:
        """(N, 3) world xyz of the remembered points (a view of the store: do not modify)."""
        return self.bank.points(0)

    def stats(self) -> dict:
        return self.bank.stats(0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-friendly); config travels separately via ``config()``."""
        return self.bank.state_dict(0)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; validates everything before changing anything."""
        self.bank.load_state_dict(0, state)


def checked_worlds(worlds, num_worlds: int) -> list[int]:
    """World indices of a batched call (default: all), each in range."""
    if worlds is None:
        return list(range(num_worlds))
    worlds = [int(i) for i in worlds]
    if not worlds or any(not 0 <= i < num_worlds for i in worlds):
        raise ValueError(f"worlds must be indices in [0, {num_worlds}), got {worlds}")
    return worlds


def checked_readout(readout: MemoryReadout, views: int, grid: tuple[int, int]) -> None:
    """A batched readout of ``views`` cameras at ``grid`` (what a write's residual check needs)."""
    if tuple(readout.mask.shape) != (views, 1, *grid) or tuple(readout.depth.shape) != (views, 1, *grid):
        raise ValueError(f"readout must be a read of the {views} written cameras at grid {grid}, got mask "
                         f"{tuple(readout.mask.shape)} and depth {tuple(readout.depth.shape)}")


def as_tensor(value, name: str, device, dtype=torch.float32) -> torch.Tensor:
    """A tensor copy of ``value`` on ``device``; raises ``ValueError`` for unconvertible input."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be array-like, got {type(value).__name__}") from exc
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device)


def checked_cameras(poses, intrinsics, device) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 stacks (B, 4, 4) and (B, 3, 3) of one pose and one intrinsics matrix per
    camera, checked by :func:`mirage_gym.geometry.check_pose` / ``check_intrinsics`` in one
    batched check (the memories' one camera check)."""
    stacks = []
    for values, name, shape in ((poses, "pose", (4, 4)), (intrinsics, "intrinsics", (3, 3))):
        items = [as_tensor(v, name, device, torch.float64) for v in values]
        for item in items:
            if tuple(item.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(item.shape)}")
        stacks.append(torch.stack(items))
    check_pose(stacks[0], "pose")
    check_intrinsics(stacks[1], "intrinsics")
    return stacks[0], stacks[1]


def checked_depth(depth, device) -> torch.Tensor:
    """A (H, W) float depth map: no NaN and no negative values (``inf`` means sky)."""
    d = as_tensor(depth, "depth", device, torch.float32)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {tuple(d.shape)}")
    if torch.isnan(d).any():
        raise ValueError("depth contains NaN")
    if (d < 0).any():
        raise ValueError("depth must be non-negative (use inf for sky)")
    return d


def checked_keep_mask(keep_mask, shape, device) -> torch.Tensor:
    if keep_mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    m = torch.as_tensor(keep_mask).to(device)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"keep_mask must have shape {tuple(shape)} like depth, got {tuple(m.shape)}")
    return m.bool()


def checked_grid(value, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a pair (height, width), got {value!r}") from exc
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


def pool_depth(depth: torch.Tensor, keep: torch.Tensor, grid_hw: tuple[int, int], mode: str = "area",
               ignore: torch.Tensor | None = None):
    """Depth (..., H, W) pooled onto a coarser grid over each cell's kept pixels, and which
    cells are kept.

    A cell is kept only if every pixel in it is kept (finite, static): a cell that mixes
    a dynamic object with static surface would write a point floating between them.
    ``ignore`` (..., H, W) bool marks pixels (sky) that neither enter the depth nor spoil
    the cell, as long as at least half the cell is kept: a roof edge against the sky is
    remembered at the roof's depth. ``area`` averages the kept depths (what Mirage's
    ablation favours); ``median`` takes their median (more robust at depth edges).
    """
    h, w = grid_hw
    big_h, big_w = depth.shape[-2:]
    if big_h % h or big_w % w:
        raise ValueError(f"depth grid {big_h}x{big_w} is not a whole multiple of the feature grid {h}x{w}")
    fy, fx = big_h // h, big_w // w
    lead = depth.shape[:-2]

    def cell_mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.reshape(-1, 1, big_h, big_w).float(), (fy, fx)).reshape(*lead, h, w)

    kept = keep & torch.isfinite(depth) & (depth > 0)
    share = cell_mean(kept)
    if ignore is None:
        cell_keep = share > 0.999
    else:
        cell_keep = (cell_mean(kept | ignore) > 0.999) & (share >= 0.5)
    if mode == "area":
        pooled = cell_mean(torch.where(kept, depth, torch.zeros_like(depth))) / share.clamp(min=1.0 / (fy * fx))
    elif mode == "median":
        blocks = torch.where(kept, depth, torch.full_like(depth, float("nan")))
        blocks = blocks.reshape(*lead, h, fy, w, fx).transpose(-3, -2).reshape(*lead, h, w, fy * fx)
        pooled = torch.nan_to_num(blocks.nanmedian(dim=-1).values, nan=0.0)
    else:
        raise ValueError(f"depth_pooling must be 'area' or 'median', got {mode!r}")
    return pooled, cell_keep
