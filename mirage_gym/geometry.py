"""Camera geometry: poses, intrinsics, projection and the camera action model.

Conventions (DESIGN.md section 3), used everywhere in the project:

* A pose is a 4x4 float64 camera-to-world matrix. Camera axes are OpenCV's:
  x right, y down, z forward. The world frame is the camera frame at reset, in metres.
* Intrinsics are a 3x3 pixel matrix. Pixel ``(i, j)`` (column, row) covers
  ``[i, i+1) x [j, j+1)`` so its centre is at ``(i + 0.5, j + 0.5)`` and the principal
  point of a centred camera is ``(W/2, H/2)``. With this convention resizing the image
  grid (for instance to the latent grid) scales the intrinsics exactly.
* Depth is z-depth (along the optical axis), ``inf`` where nothing is hit.

The camera rig keeps ``(x, y, z, yaw, pitch, roll)`` so that pitch can be clamped and
walking stays horizontal whatever the camera looks at. Yaw turns about the world's
down axis (positive = turn right), pitch about the camera's x axis (positive = look
up), roll about the optical axis.

No gymnasium import here: the world core, the memories and the scenes all use it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch

from mirage_gym.constants import MOVE_STEP, TURN_STEP_DEG

# --------------------------------------------------------------------------- validation


def check_pose(pose: np.ndarray | torch.Tensor, name: str = "pose", atol: float = 1e-4) -> None:
    """Raise ``ValueError`` unless ``pose`` is a finite rigid 4x4 (or Bx4x4) transform."""
    p = torch.as_tensor(pose).detach().to("cpu", torch.float64)
    if p.shape[-2:] != (4, 4) or p.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (4, 4) or (B, 4, 4), got {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or inf")
    last = p[..., 3, :]
    if not torch.allclose(last, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand_as(last), atol=atol):
        raise ValueError(f"{name} must have last row [0, 0, 0, 1], got {last.tolist()}")
    rot = p[..., :3, :3]
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    if not torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=atol):
        raise ValueError(f"{name} rotation block is not orthonormal (pose is not rigid)")
    if not torch.all(torch.linalg.det(rot) > 0):
        raise ValueError(f"{name} rotation block has determinant -1 (a reflection, not a rotation)")


def check_intrinsics(intrinsics: np.ndarray | torch.Tensor, name: str = "intrinsics") -> None:
    """Raise ``ValueError`` unless ``intrinsics`` is a finite pinhole 3x3 (or Bx3x3) matrix."""
    k = torch.as_tensor(intrinsics).detach().to("cpu", torch.float64)
    if k.shape[-2:] != (3, 3) or k.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (3, 3) or (B, 3, 3), got {tuple(k.shape)}")
    if not torch.isfinite(k).all():
        raise ValueError(f"{name} contains NaN or inf")
    if not (torch.all(k[..., 0, 0] > 0) and torch.all(k[..., 1, 1] > 0)):
        raise ValueError(f"{name} focal lengths must be positive")
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(k[..., 2, :])
    if not torch.allclose(k[..., 2, :], bottom):
        raise ValueError(f"{name} must have last row [0, 0, 1]")


# --------------------------------------------------------------------------- intrinsics


def intrinsics_from_fov(width: int, height: int, fov_deg: float = 90.0) -> np.ndarray:
    """Pinhole intrinsics (float64) with square pixels and horizontal FOV ``fov_deg``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def scale_intrinsics(intrinsics, src_hw: tuple[int, int], dst_hw: tuple[int, int]):
    """Intrinsics for the same camera sampled on a ``dst_hw`` grid instead of ``src_hw``.

    Works for numpy arrays and torch tensors, single or batched.
    """
    sy = dst_hw[0] / src_hw[0]
    sx = dst_hw[1] / src_hw[1]
    k = intrinsics.clone() if isinstance(intrinsics, torch.Tensor) else np.array(intrinsics, dtype=np.float64)
    k[..., 0, :] = k[..., 0, :] * sx
    k[..., 1, :] = k[..., 1, :] * sy
    return k


# --------------------------------------------------------------------------- poses


def invert_pose(pose: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid transform (..., 4, 4) without a general matrix inverse."""
    rot = pose[..., :3, :3]
    trans = pose[..., :3, 3:]
    out = torch.zeros_like(pose)
    out[..., :3, :3] = rot.transpose(-1, -2)
    out[..., :3, 3:] = -rot.transpose(-1, -2) @ trans
    out[..., 3, 3] = 1.0
    return out


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def pose_from_state(state: np.ndarray) -> np.ndarray:
    """Camera-to-world pose(s) from rig state(s) ``(..., 6)`` = x, y, z, yaw, pitch, roll (radians).

    ``R = R_yaw @ R_pitch @ R_roll``: yaw about world y (down; positive turns toward +x,
    i.e. right), pitch about camera x (positive tilts the optical axis toward -y, i.e.
    up), roll about the optical axis.
    """
    state = np.asarray(state, dtype=np.float64)
    if state.shape[-1] != 6:
        raise ValueError(f"state must have a last dimension of 6, got shape {state.shape}")
    yaw, pitch, roll = state[..., 3], state[..., 4], state[..., 5]
    rot = _rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)
    pose = np.zeros(state.shape[:-1] + (4, 4))
    pose[..., :3, :3] = rot
    pose[..., :3, 3] = state[..., :3]
    pose[..., 3, 3] = 1.0
    return pose


def look_at_pose(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """Camera-to-world pose at ``eye`` whose optical axis points at ``target`` (OpenCV axes)."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(-np.asarray(up, dtype=np.float64), z)  # camera y is down, so "up" is -y
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at_pose: view direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


# --------------------------------------------------------------------------- projection


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates ``(H, W, 3)`` = (u, v, 1)."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)], dim=-1)


def unproject_depth(depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """World points ``(..., H, W, 3)`` of every pixel of a z-depth map ``(..., H, W)``.

    ``intrinsics`` ``(..., 3, 3)`` must match the depth grid; ``pose`` ``(..., 4, 4)`` is
    camera-to-world. Non-finite depth gives non-finite points (the caller masks them).
    """
    h, w = depth.shape[-2:]
    dtype = depth.dtype
    pix = pixel_grid(h, w, device=depth.device, dtype=dtype)
    k_inv = torch.linalg.inv(intrinsics.to(dtype))
    rays = torch.einsum("...ij,hwj->...hwi", k_inv, pix)  # z component is 1
    cam = rays * depth.unsqueeze(-1)
    rot = pose[..., :3, :3].to(dtype)
    trans = pose[..., :3, 3].to(dtype)
    return torch.einsum("...ij,...hwj->...hwi", rot, cam) + trans[..., None, None, :]


def project_points(points: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor):
    """Project world points ``(N, 3)`` into a camera; returns ``(uv (N, 2), z (N,))``.

    ``uv`` are continuous pixel coordinates (pixel ``i`` spans ``[i, i+1)``); ``z`` is
    camera z-depth. Points with ``z <= 0`` get meaningless ``uv``: cull them by ``z``.
    """
    world_to_cam = invert_pose(pose.to(points.dtype))
    cam = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    k = intrinsics.to(points.dtype)
    safe_z = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    u = k[0, 0] * cam[:, 0] / safe_z + k[0, 1] * cam[:, 1] / safe_z + k[0, 2]
    v = k[1, 1] * cam[:, 1] / safe_z + k[1, 2]
    return torch.stack([u, v], dim=-1), z


def ringed_frame_rays(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 4, 3) camera rays (z = 1) through the corners of a ``height x width`` grid
    grown by a one-cell ring, for intrinsics (..., 3, 3) of that grid: the bounds of what a
    splat with ``fill_holes`` can use."""
    corners = torch.tensor([[-1.0, -1.0, 1.0], [width + 1, -1.0, 1.0], [width + 1, height + 1, 1.0],
                            [-1.0, height + 1, 1.0]], dtype=intrinsics.dtype, device=intrinsics.device)
    return corners @ torch.linalg.inv(intrinsics).transpose(-1, -2)


def pick_per_cell(cell, depth, offset, point, n_cells: int, depth_tolerance: float):
    """Winner per cell among candidate (cell, depth, offset, point) rows: the nearest depth
    (within ``depth_tolerance`` of it, with ``offset`` set: the one closest to the cell
    centre among those), then the lowest point index. Returns (cells (M,), points (M,))."""
    best = torch.full((n_cells,), math.inf, dtype=depth.dtype, device=depth.device)
    best.scatter_reduce_(0, cell, depth, reduce="amin")
    winner = depth <= best[cell] * (1.0 + depth_tolerance)
    if offset is not None:
        offset = torch.where(winner, offset, torch.full_like(offset, math.inf))
        closest = torch.full((n_cells,), math.inf, dtype=offset.dtype, device=offset.device)
        closest.scatter_reduce_(0, cell, offset, reduce="amin")
        winner &= offset <= closest[cell]
    big = torch.iinfo(torch.long).max
    first = torch.full((n_cells,), big, dtype=torch.long, device=depth.device)
    first.scatter_reduce_(0, cell[winner], point[winner], reduce="amin")
    filled = torch.nonzero(first != big, as_tuple=True)[0]
    return filled, first[filled]


# a hole is an empty cell with at least this many of its 8 neighbours filled: at latent
# resolution a surface seen from a new pose leaves such one-cell gaps where it stretches
_HOLE_NEIGHBOURS = 5


def project_per_point(points: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor, view: torch.Tensor):
    """Pixel ``u``, ``v`` and z-depth of every point in its own camera ``view[i]`` of the
    stacked ``intrinsics`` (B, 3, 3) and ``pose`` (B, 4, 4). Elementwise arithmetic only,
    so a point's result does not depend on which other points share the call."""
    pose = pose.to(points.dtype)[view]
    k = intrinsics.to(points.dtype)[view]
    cam = (pose[:, :3, :3] * (points - pose[:, :3, 3])[:, :, None]).sum(dim=1)  # R^T (p - t)
    z = cam[:, 2]
    safe_z = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    x, y = cam[:, 0] / safe_z, cam[:, 1] / safe_z
    return k[:, 0, 0] * x + k[:, 0, 1] * y + k[:, 0, 2], k[:, 1, 1] * y + k[:, 1, 2], z


def splat_nearest(
    points: torch.Tensor,
    intrinsics: torch.Tensor,
    pose: torch.Tensor,
    height: int,
    width: int,
    near: float = 1e-3,
    depth_tolerance: float = 0.0,
    fill_holes: bool = False,
    taken: torch.Tensor | None = None,
    view: torch.Tensor | None = None,
):
    """Z-buffered point splat: for each cell of an ``height x width`` grid, the nearest point.

    Projects ``points`` (N, 3) with ``intrinsics`` for that grid, culls points behind
    ``near`` or outside the frustum, rounds to the cell containing the projection, and
    keeps the nearest point per cell. Returns ``(cell_index (M,), point_index (M,),
    depth (M,))`` for the M filled cells: a flat index ``row * width + col``, ascending.
    Fully vectorised; ties are broken toward the lower point index, so it is deterministic.

    With ``depth_tolerance`` > 0, points within that fraction of the nearest depth count
    as the same surface, and of those the one projecting closest to the cell's centre
    wins: at latent resolution two views' points of one wall land in a cell together, and
    the best-aligned one (at a revisited pose, the cell's own point) is the one to show.

    With ``fill_holes``, an empty cell surrounded by filled ones (at least 5 of its 8
    neighbours, counting cells of a one-cell ring just outside the frame) takes the best
    of its neighbours' winning points by the same rule, measured to its own centre: the
    gaps a surface leaves where a new view stretches it are filled instead of left for
    the generator (whose guesses there would later occlude the surface), while the edge
    of what memory covers stays put. ``taken`` ((height * width,) bool) marks cells
    another layer shows (remembered sky): they count as filled neighbours and are never
    filled, though a point landing in one still wins it.

    Several cameras in one call: ``intrinsics`` (B, 3, 3), ``pose`` (B, 4, 4) and
    ``view`` (N,) the camera each point belongs to. Their grids are stacked, so a cell
    index is ``b * height * width + row * width + col`` and ``taken`` is
    (B * height * width,); each camera's result is exactly what a call of its own gives.
    """
    if intrinsics.ndim == 2:
        intrinsics, pose = intrinsics[None], pose[None]
    n_views = intrinsics.shape[0]
    if view is None:
        if n_views != 1:
            raise ValueError(f"view must give each point's camera when {n_views} cameras are given")
        view = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    if points.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=points.device)
        return empty, empty, torch.zeros(0, dtype=points.dtype, device=points.device)
    n_cells = height * width
    u, v, z = project_per_point(points, intrinsics, pose, view)
    col = torch.floor(u).long()
    row = torch.floor(v).long()
    ring = 1 if fill_holes else 0  # points just outside the frame may fill its edge cells
    near_frame = (z > near) & (col >= -ring) & (col < width + ring) & (row >= -ring) & (row < height + ring)
    idx = torch.nonzero(near_frame, as_tuple=True)[0]
    col, row, u, v, depth, view = col[idx], row[idx], u[idx], v[idx], z[idx], view[idx]
    offset = (u - col - 0.5) ** 2 + (v - row - 0.5) ** 2 if depth_tolerance > 0 else None
    # the winner of every cell of the frame and of its ring, on (height + 2r) x (width + 2r) grids
    ext_h, ext_w = height + 2 * ring, width + 2 * ring
    local = torch.arange(idx.numel(), device=idx.device)
    ext_cell = view * (ext_h * ext_w) + (row + ring) * ext_w + col + ring
    ext, ext_index = pick_per_cell(ext_cell, depth, offset, local, n_views * ext_h * ext_w, depth_tolerance)
    ext_view, ext_rest = ext // (ext_h * ext_w), ext % (ext_h * ext_w)
    ext_row, ext_col = ext_rest // ext_w - ring, ext_rest % ext_w - ring
    inside = (ext_row >= 0) & (ext_row < height) & (ext_col >= 0) & (ext_col < width)
    filled = ext_view[inside] * n_cells + ext_row[inside] * width + ext_col[inside]
    point_index = idx[ext_index[inside]]
    if fill_holes and ext.numel():
        occupied = torch.zeros(n_views, height + 2, width + 2, dtype=torch.bool, device=points.device)
        occupied[ext_view, ext_row + 1, ext_col + 1] = True
        if taken is not None:
            occupied[:, 1:-1, 1:-1] |= taken.view(n_views, height, width)
        grid = occupied[:, None].float()
        count = torch.nn.functional.conv2d(grid, torch.ones(1, 1, 3, 3, dtype=grid.dtype, device=grid.device))
        hole = (~occupied[:, 1:-1, 1:-1] & (count[:, 0] >= _HOLE_NEIGHBOURS)).flatten()
        if hole.any():
            # each cell's winner is a candidate for the holes among the cell's 8 neighbours
            step = torch.tensor([-1, 0, 1], device=points.device)
            r = (ext_row[None, None, :] + step[:, None, None]).expand(3, 3, -1).reshape(-1)
            c = (ext_col[None, None, :] + step[None, :, None]).expand(3, 3, -1).reshape(-1)
            which = ext_index.repeat(9)
            cell = ext_view.repeat(9) * n_cells + r * width + c
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            ok &= hole[cell.clamp(0, n_views * n_cells - 1)]
            r, c, which, cell = r[ok], c[ok], which[ok], cell[ok]
            gap = (u[which] - c - 0.5) ** 2 + (v[which] - r - 0.5) ** 2
            more, more_points = pick_per_cell(cell, depth[which], gap, idx[which], n_views * n_cells, depth_tolerance)
            filled, order = torch.sort(torch.cat([filled, more]))  # the winners alone are in order
            point_index = torch.cat([point_index, more_points])[order]
    return filled, point_index, z[point_index]


# --------------------------------------------------------------------------- actions


class Action(enum.IntEnum):
    """The default discrete navigation set (step sizes come from :class:`RigConfig`)."""

    MOVE_FORWARD = 0
    MOVE_BACKWARD = 1
    STRAFE_LEFT = 2
    STRAFE_RIGHT = 3
    TURN_LEFT = 4
    TURN_RIGHT = 5
    LOOK_UP = 6
    LOOK_DOWN = 7
    NOOP = 8


# Each discrete action as a unit continuous action (dx, dy, dz, dyaw, dpitch, droll).
_DISCRETE_TO_CONTINUOUS = np.zeros((len(Action), 6))
_DISCRETE_TO_CONTINUOUS[Action.MOVE_FORWARD, 2] = 1.0
_DISCRETE_TO_CONTINUOUS[Action.MOVE_BACKWARD, 2] = -1.0
_DISCRETE_TO_CONTINUOUS[Action.STRAFE_LEFT, 0] = -1.0
_DISCRETE_TO_CONTINUOUS[Action.STRAFE_RIGHT, 0] = 1.0
_DISCRETE_TO_CONTINUOUS[Action.TURN_LEFT, 3] = -1.0
_DISCRETE_TO_CONTINUOUS[Action.TURN_RIGHT, 3] = 1.0
_DISCRETE_TO_CONTINUOUS[Action.LOOK_UP, 4] = 1.0
_DISCRETE_TO_CONTINUOUS[Action.LOOK_DOWN, 4] = -1.0


@dataclass(frozen=True)
class RigConfig:
    """Step sizes of the camera rig. Translations in metres, angles in degrees."""

    move_step: float = MOVE_STEP
    turn_step_deg: float = TURN_STEP_DEG
    pitch_step_deg: float = TURN_STEP_DEG
    roll_step_deg: float = TURN_STEP_DEG
    pitch_limit_deg: float = 60.0
    roll_limit_deg: float = 45.0


def discrete_to_continuous(action) -> np.ndarray:
    """Unit 6-DoF action(s) for discrete action id(s); raises ``ValueError`` on unknown ids."""
    a = np.asarray(action)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"action must be an integer id in [0, {len(Action) - 1}], got {action!r}")
    if np.any(a < 0) or np.any(a >= len(Action)):
        raise ValueError(f"action must be an integer id in [0, {len(Action) - 1}], got {action!r}")
    return _DISCRETE_TO_CONTINUOUS[a]


def checked_motion(motion, name: str = "motion", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``motion`` as float64 continuous action(s) (..., 6), each component in [-1, 1]; raises
    ``ValueError`` naming ``name`` (the one motion check: the env's actions and the world's
    motions go through it)."""
    a = np.asarray(motion)
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a real-valued array of shape {shape or '(..., 6)'}, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if (shape is not None and a.shape != shape) or (shape is None and (a.ndim == 0 or a.shape[-1] != 6)):
        raise ValueError(f"{name} must have shape {shape or '(..., 6)'}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a}")
    if np.any(np.abs(a) > 1.0 + 1e-6):
        raise ValueError(f"{name} components must lie in [-1, 1], got {a}")
    return a


def apply_motion(state: np.ndarray, motion: np.ndarray, rig: RigConfig = RigConfig()) -> np.ndarray:
    """Next rig state(s) after a continuous action ``motion (..., 6)`` in ``[-1, 1]``.

    Translation (dx right, dy down, dz forward) is expressed in the heading frame (yaw
    only), so walking stays horizontal whatever the pitch; dy moves along world y.
    Rotations are added to yaw, pitch and roll; pitch and roll are clamped.
    """
    state = np.asarray(state, dtype=np.float64)
    motion = checked_motion(motion)
    yaw = state[..., 3]
    step = motion[..., :3] * rig.move_step
    c, s = np.cos(yaw), np.sin(yaw)
    out = state.copy()
    out[..., 0] += c * step[..., 0] + s * step[..., 2]
    out[..., 1] += step[..., 1]
    out[..., 2] += -s * step[..., 0] + c * step[..., 2]
    out[..., 3] = yaw + math.radians(rig.turn_step_deg) * motion[..., 3]
    out[..., 3] = (out[..., 3] + math.pi) % (2 * math.pi) - math.pi
    pitch_lim = math.radians(rig.pitch_limit_deg)
    out[..., 4] = np.clip(state[..., 4] + math.radians(rig.pitch_step_deg) * motion[..., 4], -pitch_lim, pitch_lim)
    roll_lim = math.radians(rig.roll_limit_deg)
    out[..., 5] = np.clip(state[..., 5] + math.radians(rig.roll_step_deg) * motion[..., 5], -roll_lim, roll_lim)
    return out
