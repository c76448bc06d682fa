"""What every spatial memory shares: the readout type, input checks, depth pooling, sorted merges."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mirage_gym.geometry import check_intrinsics, check_pose


@dataclass
class MemoryReadout:
    """Memory projected onto one camera.

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


def as_tensor(value, name: str, device, dtype=torch.float32) -> torch.Tensor:
    """A tensor copy of ``value`` on ``device``; raises ``ValueError`` for unconvertible input."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be array-like, got {type(value).__name__}") from exc
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device)


def checked_pose(pose, device) -> torch.Tensor:
    check_pose(pose, "pose")
    if torch.as_tensor(pose).ndim != 2:
        raise ValueError(f"pose must have shape (4, 4), got {tuple(torch.as_tensor(pose).shape)}")
    return as_tensor(pose, "pose", device, torch.float64)


def checked_intrinsics(intrinsics, device) -> torch.Tensor:
    check_intrinsics(intrinsics, "intrinsics")
    if torch.as_tensor(intrinsics).ndim != 2:
        raise ValueError(f"intrinsics must have shape (3, 3), got {tuple(torch.as_tensor(intrinsics).shape)}")
    return as_tensor(intrinsics, "intrinsics", device, torch.float64)


def checked_cameras(poses, intrinsics, device) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 stacks (B, 4, 4) and (B, 3, 3) of one pose and one intrinsics matrix per
    camera, each checked like :func:`checked_pose` / :func:`checked_intrinsics` (in one
    batched check)."""
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


def merge_sorted(old_keys: torch.Tensor, new_keys: torch.Tensor, positions: torch.Tensor | None = None,
                 values: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()):
    """Merge sorted, disjoint 1-D ``new_keys`` into sorted ``old_keys`` in one linear pass
    (the new rows go to their places, the old rows fill the gaps in order), instead of
    sorting both again. ``positions`` is ``searchsorted(old_keys, new_keys)`` if known;
    ``values`` are ``(old, new)`` pairs of per-key tensors merged alongside. Returns the
    merged keys and the list of merged values."""
    if positions is None:
        positions = torch.searchsorted(old_keys, new_keys)
    new_at = positions + torch.arange(new_keys.numel(), device=new_keys.device)
    old_rows = torch.ones(old_keys.numel() + new_keys.numel(), dtype=torch.bool, device=new_keys.device)
    old_rows[new_at] = False
    merged = []
    for old, new in ((old_keys, new_keys), *values):
        out = torch.empty(old_rows.numel(), dtype=old.dtype, device=old.device)
        out[new_at] = new.to(old.dtype)
        merged.append(out.masked_scatter_(old_rows, old))
    return merged[0], merged[1:]


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
