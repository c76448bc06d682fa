"""Exact, vectorised ray casting of box scenes, anti-aliased shading, and free-space queries.

Rays share the camera centre, and each ray direction is ``R @ K^-1 (u, v, 1)`` so its camera
z component is 1: the ray parameter at a hit *is* the z-depth, with no conversion error.
Boxes are tested one by one (a short Python loop) but each only over the sub-rectangle of
the supersampled image its projection can cover, so the work is proportional to the
screen area the scene occupies, not to pixels x boxes.

RGB is supersampled ``s x s`` per pixel and box-filtered; depth and labels come from the
ray through the exact pixel centre (the centre subsample when ``s`` is odd, otherwise a
separate centre pass).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..geometry import check_intrinsics, check_pose, intrinsics_from_fov, pose_from_state
from .layout import FLOOR_Y, LABEL_DYNAMIC, LABEL_SKY, LABEL_STATIC, Layout
from .textures import albedo, sky_color

_NEAR = 1e-4  # near plane (m): hits closer than this are ignored, boxes are clipped here
_TOUCH = 1e-2  # a camera 1 cm off a face plane sees it beyond _NEAR unless FOV > 178 degrees (|d| > 100)
_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_EYE3 = np.eye(3)
_CUBE = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=bool)
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def default_supersample(width: int, height: int) -> int:
    """Subsamples per pixel side: 3 up to 64 px, 2 up to 256 px, 1 above.

    At 64x64 a pixel spans about 0.1 m at 3 m, so 0.3-0.5 m stripes need real filtering
    (3x3 cuts the error against a 16-sample reference by about 3x). Above 64 px the
    textures are mostly resolved and 2x2 (plus an exact pixel-centre pass for depth and
    labels) smooths edges within the 50 ms budget at 256 px; beyond that, 1 sample.
    Measured in benchmarks/scenes.py.
    """
    side = max(width, height)
    return 3 if side <= 64 else 2 if side <= 256 else 1


@dataclass(frozen=True, eq=False)
class Render:
    """One frame: ``rgb (H, W, 3) uint8``, ``depth (H, W) float32`` z-depth (inf = sky),
    ``labels (H, W) uint8`` (LABEL_STATIC / LABEL_SKY / LABEL_DYNAMIC), ``intrinsics``
    ``(3, 3) float64``, the camera-to-world ``pose`` and the ``supersample`` factor used."""

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    intrinsics: np.ndarray
    pose: np.ndarray
    supersample: int


@dataclass(frozen=True, eq=False)
class Probe:
    """Per-ray ground truth from :meth:`Scene.probe`: ``depth (N,) float32`` z-depth (inf =
    sky), ``labels (N,) uint8``, ``rgb (N, 3) uint8`` (the colour at the exact ray, no filter)."""

    depth: np.ndarray
    labels: np.ndarray
    rgb: np.ndarray


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Scene:
    """A procedural box scene: ``render`` frames from any pose, ``probe`` single rays,
    ``is_free`` / ``sample_free_pose`` for collision-free trajectories.

    Attributes: ``kind`` ("indoor" / "outdoor"), ``seed``, ``bounds`` = ``((xmin, xmax),
    (zmin, zmax))`` of the walkable area, ``floor_y`` (the floor is the plane ``y = floor_y``),
    ``layout`` (the boxes, materials and walkable air boxes).
    """

    def __init__(self, layout: Layout, seed: int):
        self.layout = layout
        self.kind = layout.kind
        self.seed = seed
        self.floor_y = FLOOR_Y
        r = layout.walk_rects
        self.bounds = ((float(r[:, 0].min()), float(r[:, 1].max())), (float(r[:, 2].min()), float(r[:, 3].max())))
        self._lo32 = layout.lo.astype(np.float32)
        self._hi32 = layout.hi.astype(np.float32)
        # Per-surface tables indexed by sid = 6 * box + face, plus a last sky entry for sid -1.
        n_sid = layout.face_mat.size
        self._sid_mat = np.append(layout.face_mat.reshape(-1), len(layout.materials)).astype(np.int32)
        self._sid_axis = np.append(np.arange(n_sid) % 6 // 2, -1).astype(np.int8)
        self._sid_light = np.append(layout.lighting.face_factor[np.arange(n_sid) % 6], 1.0).astype(np.float32)

    def __repr__(self) -> str:
        return f"Scene(kind={self.kind!r}, seed={self.seed}, boxes={len(self.layout.lo)}, bounds={self.bounds})"

    # ------------------------------------------------------------------ render

    def render(self, pose, width: int = 64, height: int = 64, fov_deg: float = 90.0, intrinsics=None,
               supersample: int | None = None) -> Render:
        """Render RGB, z-depth and labels from camera-to-world ``pose`` (4x4, OpenCV axes)."""
        width = _check_size(width, "width")
        height = _check_size(height, "height")
        pose = _checked_pose(pose)
        if intrinsics is None:
            if not (isinstance(fov_deg, (int, float, np.floating, np.integer)) and 0.0 < fov_deg < 180.0):
                raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg!r}")
            k = intrinsics_from_fov(width, height, float(fov_deg))
        else:
            k = _checked_intrinsics(intrinsics)
        s = default_supersample(width, height) if supersample is None else _check_size(supersample, "supersample")
        if s > 8:
            raise ValueError(f"supersample must be at most 8, got {s}")

        origin = pose[:3, 3]
        dirs = _ray_dirs(k, pose[:3, :3], height, width, s)
        t, sid = self._cast(origin, dirs, *_screen_rects(self.layout.lo, self.layout.hi, pose, k, s, height, width))
        rgb = _box_filter(self._shade(origin, dirs, t, sid), height, width, s)
        rgb = np.clip(rgb * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
        if s % 2 == 1:
            c = s // 2
            t_c, sid_c = t[c::s, c::s], sid[c::s, c::s]
        else:
            dirs_c = _ray_dirs(k, pose[:3, :3], height, width, 1)
            rects_c = _screen_rects(self.layout.lo, self.layout.hi, pose, k, 1, height, width)
            t_c, sid_c = self._cast(origin, dirs_c, *rects_c)
        return Render(rgb=rgb, depth=np.ascontiguousarray(t_c, dtype=np.float32), labels=self._labels(sid_c),
                      intrinsics=k, pose=pose, supersample=s)

    def probe(self, pose, uv, intrinsics) -> Probe:
        """Exact depth, label and (unfiltered) colour along the rays through continuous pixel
        coordinates ``uv (N, 2)`` of the camera ``(pose, intrinsics)``.

        Ground truth at any point: e.g. project a memory point, probe there and compare
        depths for visibility, or colours for fidelity. ``render`` at pixel centres with
        ``supersample=1`` gives the same values on its grid.
        """
        pose = _checked_pose(pose)
        k = _checked_intrinsics(intrinsics)
        uv = np.asarray(uv, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2 or not np.isfinite(uv).all():
            raise ValueError(f"uv must be a finite (N, 2) array, got shape {uv.shape}")
        cam = np.linalg.inv(k) @ np.stack([uv[:, 0], uv[:, 1], np.ones(len(uv))])
        world = (pose[:3, :3] @ (cam / cam[2])).astype(np.float32)
        dirs = tuple(world[a][None, :] for a in range(3))
        _, z_min = _screen_rects(self.layout.lo, self.layout.hi, pose, k, 1, 1, 1)
        rects = np.where(np.isfinite(z_min)[:, None], np.array([0, 1, 0, len(uv)]), 0)
        t, sid = self._cast(pose[:3, 3], dirs, rects, z_min)
        rgb = self._shade(pose[:3, 3], dirs, t, sid).T
        rgb = np.clip(rgb * np.float32(255.0) + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
        return Probe(depth=t[0].copy(), labels=self._labels(sid[0]), rgb=rgb)

    def _labels(self, sid: np.ndarray) -> np.ndarray:
        return np.where(sid >= 0, self.layout.label[np.maximum(sid, 0) // 6], LABEL_SKY).astype(np.uint8)

    def _cast(self, origin, dirs, rects, z_min):
        """Nearest hit ``t`` (= z-depth, inf on a miss) and surface id ``6 * box + face`` (-1) per ray.

        ``rects`` are the windows of the ray arrays each box may cover and ``z_min`` a lower
        bound of its depth: boxes are processed front to back and skipped when their window is
        already entirely nearer. Seen from outside, a box is entered through the face on the
        camera's side of each slab, so the candidate face per axis is a per-box constant and
        only the winning axis has to be tracked per ray.
        """
        h, w = dirs[0].shape
        # 1/0 = inf is fine; inf * 0 = nan only for a ray lying in a face plane through the
        # camera (a grazing ray), and nan compares false, i.e. a miss.
        with np.errstate(divide="ignore"):
            inv = [np.float32(1.0) / d for d in dirs]
        t_best = np.full((h, w), np.inf, dtype=np.float32)
        sid_best = np.full((h, w), -1, dtype=np.int32)
        lo_rel = (self.layout.lo - origin).astype(np.float32)
        hi_rel = (self.layout.hi - origin).astype(np.float32)
        # per box and axis, the camera's distance outside the slab (0 inside): only boxes
        # whose face planes pass within _TOUCH of the camera need the near-plane test
        gap = np.maximum(np.maximum(lo_rel, -hi_rel), 0.0).tolist()
        visible = np.flatnonzero(rects[:, 1] > rects[:, 0])
        for b in visible[np.argsort(z_min[visible], kind="stable")]:  # front to back
            r0, r1, c0, c1 = rects[b]
            win = (slice(r0, r1), slice(c0, c1))
            tb = t_best[win]
            if tb.max() < z_min[b]:  # everything in its window is already nearer: occluded
                continue
            near, near_sid, far = [], [], []
            for a in range(3):
                ia = inv[a][win]
                lo_a, hi_a = lo_rel[b, a], hi_rel[b, a]
                if lo_a > 0:
                    near.append(lo_a * ia)
                    near_sid.append(6 * b + 2 * a)
                    far.append(hi_a * ia)
                elif hi_a < 0:
                    near.append(hi_a * ia)
                    near_sid.append(6 * b + 2 * a + 1)
                    far.append(lo_a * ia)
                else:
                    far.append(np.maximum(lo_a * ia, hi_a * ia))
            t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
            if near:
                t_near, sid = near[0], np.int32(near_sid[0])
                for n_a, s_a in zip(near[1:], near_sid[1:]):
                    later = n_a > t_near
                    t_near = np.where(later, n_a, t_near)
                    sid = np.where(later, np.int32(s_a), sid)
                # Outside a slab the entry is positive on a hit, so no sign test is needed,
                # unless the camera (nearly) touches the face planes: then clip at _NEAR.
                hit = t_near <= t_far
                if max(gap[b]) < _TOUCH:
                    hit &= t_near > _NEAR
                cand = np.where(hit, t_near, np.float32(np.inf))
            else:  # camera inside the box: it sees the inside of the faces it exits through
                cand = np.where(t_far > _NEAR, t_far, np.float32(np.inf))
                axis = np.where(far[0] == t_far, 0, np.where(far[1] == t_far, 1, 2))
                positive = np.choose(axis, [a[win] for a in inv]) > 0
                sid = (6 * b + 2 * axis + positive).astype(np.int32)
            closer = cand < tb
            np.copyto(tb, cand, where=closer)
            np.copyto(sid_best[win], sid, where=closer)
        return t_best, sid_best

    def _shade(self, origin, dirs, t, sid):
        """Channel-first RGB ``(3, N)`` float32 in [0, 1] of the subsample rays: lit albedo on
        hits, sky (black indoors) on misses.

        Works on all rays at once; a miss (sid -1) indexes the last entry of the per-surface
        tables, which is the sky sentinel, so no compaction and re-scatter is needed.
        """
        lay = self.layout
        sid = sid.reshape(-1)
        d = [a.reshape(-1) for a in dirs]
        tt = t.reshape(-1)
        o = origin.astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):  # misses have t = inf
            px, py, pz = (o[a] + tt * d[a] for a in range(3))
        axis = self._sid_axis[sid]
        u = np.where(axis == 0, pz, px)
        v = np.where(axis == 1, pz, np.float32(FLOOR_Y) - py)
        mats = self._sid_mat[sid]
        rgb = np.zeros((3, sid.size), dtype=np.float32)
        sky = len(lay.materials)
        for m in np.flatnonzero(np.bincount(mats, minlength=sky + 1)):
            sel = np.flatnonzero(mats == m)
            if m == sky:
                if lay.sky is None:
                    continue
                col = sky_color(lay.sky, d[0][sel], d[1][sel], d[2][sel])
            else:
                mat = lay.materials[m]
                extent = None
                if mat.pattern == "facade":
                    box = sid[sel] // 6
                    x_face = axis[sel] == 0  # faces normal to x run along z
                    extent = (np.where(x_face, self._lo32[box, 2], self._lo32[box, 0]),
                              np.where(x_face, self._hi32[box, 2], self._hi32[box, 0]))
                col = albedo(mat, u[sel], v[sel], extent)
            for c in range(3):  # three 1-D scatters are about 3x faster than one (3, n) scatter
                rgb[c][sel] = col[c]
        rgb *= self._sid_light[sid]
        return rgb

    # ------------------------------------------------------------------ free space

    def is_free(self, points, clearance: float = 0.3) -> np.ndarray:
        """``(N,)`` bool: inside the walkable area and at least ``clearance`` from every solid.

        The walkable area is a union of boxes of air (rooms up to their ceilings, doorways up
        to their lintels, the courtyard up to 5 m). Solids are all boxes (walls, floor and
        ceiling slabs, furniture, buildings, dynamic objects). A point inside a solid is never
        free, even with ``clearance=0``.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {np.shape(points)}")
        if not (np.isfinite(clearance) and clearance >= 0):
            raise ValueError(f"clearance must be a finite non-negative number, got {clearance!r}")
        r = self.layout.walk_rects
        x, y, z = pts[:, 0:1], pts[:, 1:2], pts[:, 2:3]
        inside = (x >= r[:, 0]) & (x <= r[:, 1]) & (z >= r[:, 2]) & (z <= r[:, 3]) & (y >= r[:, 4]) & (y <= r[:, 5])
        ok = inside.any(axis=1)
        lo, hi = self.layout.lo, self.layout.hi
        for start in range(0, len(pts), 4096):
            chunk = pts[start:start + 4096, None, :]
            gap = np.maximum(np.maximum(lo - chunk, chunk - hi), 0.0)
            dist2 = (gap * gap).sum(axis=-1).min(axis=1, initial=np.inf)
            ok[start:start + 4096] &= (dist2 >= clearance**2) & (dist2 > 0)  # inside a solid is never free
        return ok

    def sample_free_pose(self, rng: np.random.Generator, clearance: float = 0.3, eye_jitter: float = 0.3,
                         max_pitch_deg: float = 20.0, min_view_depth: float = 1.0) -> np.ndarray:
        """A random free camera pose near eye height whose view is not blocked up close.

        Position uniform over the walkable area (``is_free``), yaw uniform, small pitch; the
        median depth of a coarse render must be at least ``min_view_depth``.
        """
        rects = self.layout.walk_rects
        area = (rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])
        for _ in range(1000):
            r = rects[rng.choice(len(rects), p=area / area.sum())]
            p = np.array([rng.uniform(r[0], r[1]), rng.uniform(-eye_jitter, eye_jitter), rng.uniform(r[2], r[3])])
            if not self.is_free(p, clearance)[0]:
                continue
            pitch = math.radians(rng.uniform(-max_pitch_deg, max_pitch_deg))
            pose = pose_from_state(np.array([*p, rng.uniform(-math.pi, math.pi), pitch, 0.0]))
            probe = self.render(pose, 16, 16, supersample=1).depth
            if np.median(probe) >= min_view_depth:
                return pose
        raise RuntimeError("could not sample a free pose")  # pragma: no cover - layouts keep the start free


def _checked_pose(pose) -> np.ndarray:
    """A float64 (4, 4) copy of ``pose``; ``geometry.check_pose`` decides validity.

    check_pose goes through torch (about 0.25 ms, 6 % of a 64x64 frame), so a stricter numpy
    test (1e-6 instead of its 1e-4) accepts clearly rigid poses first; anything else is
    left to check_pose, which raises or accepts exactly as it would alone.
    """
    pose = np.array(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must have shape (4, 4), got {pose.shape}")
    rot = pose[:3, :3]
    clearly_rigid = (
        np.isfinite(pose).all()
        and np.abs(pose[3] - _LAST_ROW).max() <= 1e-6
        and np.abs(rot @ rot.T - _EYE3).max() <= 1e-6
        and np.linalg.det(rot) > 0
    )
    if not clearly_rigid:
        check_pose(pose, "pose")
    return pose


def _checked_intrinsics(intrinsics) -> np.ndarray:
    k = np.array(intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics must have shape (3, 3), got {k.shape}")
    check_intrinsics(k, "intrinsics")
    return k


def _box_filter(rgb: np.ndarray, height: int, width: int, s: int) -> np.ndarray:
    """``(H, W, 3)`` mean over each pixel's ``s x s`` subsamples of channel-first ``(3, N)``
    (slice sums: much faster than a 5-D mean)."""
    x = rgb.reshape(3, height, s, width, s)
    acc = x[:, :, 0, :, 0].copy()
    for i in range(s):
        for j in range(s):
            if i or j:
                acc += x[:, :, i, :, j]
    return (acc * np.float32(1.0 / (s * s))).transpose(1, 2, 0)


@functools.lru_cache(maxsize=32)
def _camera_grid(k_bytes: bytes, height: int, width: int, s: int):
    """Camera-space ray directions (xn, yn) with z = 1 on the subsample grid, float32, cached."""
    k_inv = np.linalg.inv(np.frombuffer(k_bytes, dtype=np.float64).reshape(3, 3))
    u = (np.arange(width * s, dtype=np.float64) + 0.5) / s
    v = (np.arange(height * s, dtype=np.float64) + 0.5) / s
    yn = np.broadcast_to((k_inv[1, 1] * v + k_inv[1, 2])[:, None], (height * s, width * s))
    xn = k_inv[0, 0] * u[None, :] + k_inv[0, 1] * v[:, None] + k_inv[0, 2]
    xn, yn = xn.astype(np.float32), np.ascontiguousarray(yn, dtype=np.float32)
    xn.flags.writeable = yn.flags.writeable = False
    return xn, yn


def _ray_dirs(k: np.ndarray, rot: np.ndarray, height: int, width: int, s: int):
    """World ray directions (dx, dy, dz), each ``(height*s, width*s)`` float32, camera z = 1.

    Subsample ``q`` of the ``s``-times finer grid sits at pixel coordinate ``(q + 0.5) / s``;
    for odd ``s`` the centre subsample is exactly the pixel centre ``i + 0.5``.
    """
    xn, yn = _camera_grid(np.ascontiguousarray(k, dtype=np.float64).tobytes(), height, width, s)
    r = rot.astype(np.float32)
    return tuple(r[a, 0] * xn + r[a, 1] * yn + r[a, 2] for a in range(3))


def _screen_rects(lo, hi, pose, k, s, height, width):
    """Conservative ``(B, 4)`` int [row0, row1, col0, col1) windows of each box on the subsample
    grid (``height * s`` x ``width * s``), and each box's smallest camera z (a lower bound of
    any depth it can produce).

    The box is clipped to camera z >= _NEAR (corners in front plus edge crossings), projected,
    and its bounding rectangle padded by one subsample; boxes entirely behind get an empty window.
    """
    h, w = height * s, width * s
    rot, origin = pose[:3, :3], pose[:3, 3]
    corners = np.where(_CUBE[None], hi[:, None, :], lo[:, None, :])  # (B, 8, 3)
    cam = (corners - origin) @ rot  # world -> camera: R^T (p - o)
    za, zb = cam[:, _EDGES[:, 0], 2], cam[:, _EDGES[:, 1], 2]
    cross = (za - _NEAR) * (zb - _NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(cross, (_NEAR - za) / (zb - za), 0.0)
    clip = cam[:, _EDGES[:, 0]] + f[..., None] * (cam[:, _EDGES[:, 1]] - cam[:, _EDGES[:, 0]])
    pts = np.concatenate([cam, clip], axis=1)
    valid = np.concatenate([cam[..., 2] >= _NEAR, cross], axis=1)
    zc = np.where(valid, np.maximum(pts[..., 2], _NEAR), 1.0)
    uu = (k[0, 0] * pts[..., 0] + k[0, 1] * pts[..., 1]) / zc + k[0, 2]
    vv = k[1, 1] * pts[..., 1] / zc + k[1, 2]
    inf = np.inf
    u0 = np.where(valid, uu, inf).min(axis=1)
    u1 = np.where(valid, uu, -inf).max(axis=1)
    v0 = np.where(valid, vv, inf).min(axis=1)
    v1 = np.where(valid, vv, -inf).max(axis=1)
    any_valid = valid.any(axis=1)
    # subsample q is at pixel coordinate (q + 0.5) / s
    c0 = np.floor(np.clip(u0 * s - 0.5, -2, w + 2)) - 1
    c1 = np.ceil(np.clip(u1 * s - 0.5, -2, w + 2)) + 2
    r0 = np.floor(np.clip(v0 * s - 0.5, -2, h + 2)) - 1
    r1 = np.ceil(np.clip(v1 * s - 0.5, -2, h + 2)) + 2
    out = np.stack([np.clip(r0, 0, h), np.clip(r1, 0, h), np.clip(c0, 0, w), np.clip(c1, 0, w)], axis=1)
    out = np.where(any_valid[:, None], out, 0).astype(np.int64)
    empty = (out[:, 1] <= out[:, 0]) | (out[:, 3] <= out[:, 2])
    out[empty] = 0
    z_min = np.where(valid, pts[..., 2], np.inf).min(axis=1)
    return out, z_min


__all__ = ["Scene", "Render", "Probe", "default_supersample", "LABEL_STATIC", "LABEL_SKY", "LABEL_DYNAMIC"]
