"""World-consistency scores for any rollout, from classical geometry (OpenCV, no network weights).

WorldScore ranks world models with learned networks (DROID-SLAM for camera control, SEA-RAFT
for photometric consistency, ...). Here the world's poses and intrinsics are known exactly,
so classical estimators give the same kinds of score in milliseconds, offline:

* **camera control**: the relative motion between consecutive frames estimated from the
  frames (tracked corners; with depth: PnP, without: the essential matrix or, when the
  tracks are explained by a rotation alone, a rotation) against the commanded motion.
  Rotation error is the angle of ``R_est^T R_cmd``; translation error the angle between
  the directions (0 when both say "no translation", 90 degrees, chance level, when only
  one of them does). A pair whose motion cannot be estimated counts as the identity.
* **photometric consistency**: forward-backward cycle error of dense DIS optical flow
  between consecutive frames (pixels).
* **reprojection**: each next frame drawn from the previous one through the given depth and
  the known relative pose; PSNR over the pixels both frames see.
* **loop closure**: PSNR between frames whose poses coincide (within a tolerance) after the
  camera has left and come back.
* **sharpness**: mean luminance-gradient magnitude per frame.

Failure modes (each score alone can be gamed; together they cannot):

* a frozen video (one frame repeated while the poses move) has a perfect cycle error and
  perfect loops, but camera control sees no motion and reprojection fails;
* independent noise per frame breaks the flow cycle; blur keeps the cycle and the geometry
  but lowers sharpness;
* camera control needs texture: on a blank wall nothing is tracked and the pair counts as
  the identity; pure translation along the optical axis and translation too small to give
  half a pixel of parallax read as "no translation";
* reprojection is only as good as the depth it is given: it checks frames *and* depth
  together, and is NaN without depth; pixels whose depth disagrees between the two frames
  (occlusions, but also wrong depth) are left out, so ``reprojection_visible`` is reported
  beside it;
* loop PSNR is NaN when the trajectory never returns; it rewards a frozen video.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mirage_gym.geometry import check_intrinsics, check_pose
from mirage_gym.metrics import PSNR_CAP_DB, gradient_energy

MIN_TRACKS = 8  # fewer tracked corners than this: the pair's motion is not estimated (identity)
TRACK_FB_PX = 0.5  # a corner tracked forward and back must land within this of where it started
INLIER_PX = 1.0  # RANSAC threshold of the motion models
ROTATION_SHARE = 0.9  # without depth, a rotation alone wins when it explains this share of the essential matrix's inliers
PARALLAX_PX = 0.5  # a PnP translation shifting a point at the median depth by less than this is no translation
STILL_M = 1e-6  # a commanded translation shorter than this is none
CYCLE_PX = 1.0  # a pixel whose flow cycle closes within this counts in the photometric residual
DEPTH_AGREEMENT = 0.05  # relative z-depth difference up to which a reprojected pixel is seen by both frames


# --------------------------------------------------------------------------- input checks


def check_rollout(frames, poses, intrinsics, depths=None):
    """Validated float64 / uint8 copies of a rollout; ``ValueError`` names what is wrong."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0-255), got dtype {frames.dtype}")
    t, h, w = frames.shape[:3]
    if t < 2:
        raise ValueError(f"frames must hold at least 2 frames to score motion, got {t}")
    if h < 16 or w < 16:
        raise ValueError(f"frames must be at least 16x16 pixels, got {h}x{w}")
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape != (t, 4, 4):
        raise ValueError(f"poses must have shape (T, 4, 4) = ({t}, 4, 4) like frames, got {poses.shape}")
    check_pose(poses, name="poses")
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must be one (3, 3) pixel matrix for all frames, got shape {intrinsics.shape}")
    check_intrinsics(intrinsics, name="intrinsics")
    if depths is not None:
        depths = np.asarray(depths)
        if depths.ndim == 4 and depths.shape[-1] == 1:  # the env's obs["depth"] is (H, W, 1)
            depths = depths[..., 0]
        if depths.shape != (t, h, w):
            raise ValueError(f"depths must have shape (T, H, W) = ({t}, {h}, {w}) like frames, got {depths.shape}")
        if not np.issubdtype(depths.dtype, np.floating):
            raise ValueError(f"depths must be floating-point metres, got dtype {depths.dtype}")
        depths = depths.astype(np.float64)
        if np.isnan(depths).any() or (depths < 0).any():
            raise ValueError("depths must be z-depth in metres, >= 0 and without NaN (inf for sky, 0 for unknown)")
    return frames, poses, intrinsics, depths


# --------------------------------------------------------------------------- small geometry


def rotation_angle_deg(rot: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees."""
    return math.degrees(math.acos(float(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))


def direction_error_deg(est: np.ndarray, cmd: np.ndarray, est_moves: bool) -> float:
    """Angle between the estimated and commanded translation directions; 90 degrees (chance
    level) when the frames show no translation."""
    if not est_moves:
        return 90.0
    cos = float(est @ cmd) / (np.linalg.norm(est) * np.linalg.norm(cmd))
    return math.degrees(math.acos(np.clip(cos, -1.0, 1.0)))


def _opencv_intrinsics(k: np.ndarray) -> np.ndarray:
    """Our pixel centres sit at ``i + 0.5``, OpenCV's at ``i``: shift the principal point."""
    k = k.copy()
    k[:2, 2] -= 0.5
    return k


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


# --------------------------------------------------------------------------- camera control


def track_corners(gray0: np.ndarray, gray1: np.ndarray):
    """Shi-Tomasi corners of ``gray0`` tracked into ``gray1`` by pyramidal Lucas-Kanade,
    kept when tracking back lands within :data:`TRACK_FB_PX`: ``(p0, p1)`` (N, 2) each."""
    corners = cv2.goodFeaturesToTrack(gray0, maxCorners=400, qualityLevel=0.01, minDistance=2, blockSize=3)
    if corners is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    lk = {"winSize": (9, 9), "maxLevel": 2, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
    p1, ok1, _ = cv2.calcOpticalFlowPyrLK(gray0, gray1, corners, None, **lk)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(gray1, gray0, p1, None, **lk)
    h, w = gray0.shape
    good = (ok1[:, 0] == 1) & (ok2[:, 0] == 1) & (np.linalg.norm(back - corners, axis=2)[:, 0] < TRACK_FB_PX)
    good &= (p1[:, 0, 0] >= 0) & (p1[:, 0, 0] <= w - 1) & (p1[:, 0, 1] >= 0) & (p1[:, 0, 1] <= h - 1)
    return corners[good, 0], p1[good, 0]


def _rotation_model(p0, p1, k_cv):
    """Best rotation-only motion and its inlier count: RANSAC homography inliers, then the
    least-squares rotation between their bearing vectors (Kabsch / Wahba)."""
    hom, mask = cv2.findHomography(p0, p1, cv2.RANSAC, INLIER_PX)
    if hom is None or mask.sum() < 3:
        return np.eye(3), 0
    k_inv = np.linalg.inv(k_cv)
    ones = np.ones((len(p0), 1))
    b0 = (k_inv @ np.hstack([p0, ones]).T).T
    b1 = (k_inv @ np.hstack([p1, ones]).T).T
    b0 /= np.linalg.norm(b0, axis=1, keepdims=True)
    b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
    keep = mask[:, 0] > 0
    u, _, vt = np.linalg.svd(b1[keep].T @ b0[keep])
    rot = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt  # b1 ~ rot @ b0
    mapped = cv2.perspectiveTransform(p0[:, None].astype(np.float64), k_cv @ rot @ k_inv)[:, 0]
    return rot, int((np.linalg.norm(mapped - p1, axis=1) < INLIER_PX).sum())


def _pnp_model(p0, p1, k_cv, depth0):
    """Metric motion from corners lifted with frame 0's depth (PnP + RANSAC), or None;
    it moves when its translation shifts a point at the median depth by
    :data:`PARALLAX_PX` or more."""
    rows = np.clip(np.round(p0[:, 1]).astype(int), 0, depth0.shape[0] - 1)
    cols = np.clip(np.round(p0[:, 0]).astype(int), 0, depth0.shape[1] - 1)
    z = depth0[rows, cols]
    near = np.isfinite(z) & (z > 0)
    if near.sum() < MIN_TRACKS:
        return None
    rays = np.linalg.inv(k_cv) @ np.vstack([p0[near].T.astype(np.float64), np.ones(int(near.sum()))])
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        (rays * z[near]).T, p1[near].astype(np.float64), k_cv, None, reprojectionError=INLIER_PX, iterationsCount=200
    )
    if not ok or inliers is None or len(inliers) < MIN_TRACKS:
        return None
    t = tvec[:, 0]
    parallax = np.linalg.norm(t) * k_cv[0, 0] / float(np.median(z[near]))
    return cv2.Rodrigues(rvec)[0], t, bool(parallax >= PARALLAX_PX), "pnp"


def _epipolar_model(p0, p1, k_cv):
    """Without depth: a rotation alone when it explains :data:`ROTATION_SHARE` of the
    essential matrix's inliers (the essential matrix is degenerate without translation),
    else the essential matrix's rotation and translation direction; or None."""
    rot_only, n_rot = _rotation_model(p0, p1, k_cv)
    e, mask = cv2.findEssentialMat(p0, p1, k_cv, method=cv2.RANSAC, prob=0.999, threshold=INLIER_PX)
    n_ess = 0
    if e is not None and e.shape == (3, 3):
        _, rot, t, _ = cv2.recoverPose(e, p0, p1, k_cv, mask=mask.copy())
        n_ess = int(mask.sum())
    if max(n_rot, n_ess) < MIN_TRACKS:
        return None
    if n_rot >= ROTATION_SHARE * n_ess:
        return rot_only, np.zeros(3), False, "rotation"
    return rot, t[:, 0], True, "essential"


def estimate_motion(p0, p1, k_cv, depth0=None):
    """Motion ``(R, t, moves, method)`` of camera 0's points into camera 1 (``X1 = R X0 + t``)
    from tracked pixels: PnP with frame 0's depth (metric ``t``), else epipolar geometry
    (``t`` a direction). ``moves`` says whether the frames show translation at all. Too few
    tracks or a failed estimate give the identity (``method="none"``)."""
    model = None
    if len(p0) >= MIN_TRACKS:
        model = _pnp_model(p0, p1, k_cv, depth0) if depth0 is not None else None
        model = model or _epipolar_model(p0, p1, k_cv)
    return model or (np.eye(3), np.zeros(3), False, "none")


# --------------------------------------------------------------------------- flow and warping


def dense_flow():
    """DIS optical flow tuned for small frames: 4-pixel patches every 2 pixels, down to full resolution."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setPatchSize(4)
    dis.setPatchStride(2)
    dis.setFinestScale(0)
    return dis


def flow_consistency(frame0: np.ndarray, frame1: np.ndarray, gray0: np.ndarray, gray1: np.ndarray, dis=None):
    """``(cycle, residual)`` of forward and backward DIS flow between two frames.

    ``cycle``: median over pixels (whose forward flow stays in the frame) of the
    forward-backward end-point error in pixels; the median, because pixels that leave the
    view have no true flow and would dominate a mean. ``residual``: mean absolute
    difference (grey levels, 0-255 RGB) between frame 0 and frame 1 pulled back along the
    forward flow, over pixels whose cycle closes within :data:`CYCLE_PX`.
    """
    dis = dis or dense_flow()
    fwd = dis.calc(gray0, gray1, None)
    bwd = dis.calc(gray1, gray0, None)
    h, w = gray0.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    tx, ty = xs + fwd[..., 0], ys + fwd[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    if not inside.any():
        return float("nan"), float("nan")
    error = np.linalg.norm(fwd + cv2.remap(bwd, tx, ty, cv2.INTER_LINEAR), axis=2)
    closed = inside & (error < CYCLE_PX)
    pulled = cv2.remap(frame1, tx, ty, cv2.INTER_LINEAR).astype(np.float64)
    residual = float(np.abs(pulled - frame0)[closed].mean()) if closed.any() else 255.0
    return float(np.median(error[inside])), residual


def reproject(frame0, depth0, depth1, k, rel):
    """Frame 0 drawn at camera 1 through depth 1 and ``rel`` (camera 1 -> camera 0 coordinates):
    ``(image, visible)``, visible where the point lies in frame 0's view and frame 0's depth
    agrees (sky, ``inf``, is moved by the rotation alone and must meet sky)."""
    h, w = depth1.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.linalg.inv(k) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    z1 = depth1.ravel()
    sky1 = ~np.isfinite(z1)
    points = np.where(sky1, rays, rays * np.where(sky1, 1.0, z1))
    cam0 = rel[:3, :3] @ points + np.where(sky1, 0.0, 1.0) * rel[:3, 3:]
    z0 = cam0[2]
    front = z0 > 1e-6
    pix = (k @ cam0)[:2] / np.where(front, z0, 1.0)
    px, py = pix[0] - 0.5, pix[1] - 0.5  # OpenCV pixel centres
    inside = front & (z1 > 0) & (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    rows = np.clip(np.round(py).astype(int), 0, h - 1)
    cols = np.clip(np.round(px).astype(int), 0, w - 1)
    d0 = depth0[rows, cols]
    sky0 = ~np.isfinite(d0)
    with np.errstate(invalid="ignore"):
        agree = np.where(sky1, sky0, ~sky0 & (np.abs(d0 - z0) <= DEPTH_AGREEMENT * z0))
    visible = (inside & agree).reshape(h, w)
    image = cv2.remap(frame0, px.reshape(h, w).astype(np.float32), py.reshape(h, w).astype(np.float32), cv2.INTER_LINEAR)
    return image, visible


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 images over ``mask`` (all pixels if None), capped at
    :data:`~mirage_gym.metrics.PSNR_CAP_DB`; NaN for an empty mask."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    if mask is not None:
        diff = diff[mask]
    if diff.size == 0:
        return float("nan")
    mse = float((diff**2).mean())
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * math.log10(1.0 / mse))


# --------------------------------------------------------------------------- loops


def loop_pairs(poses: np.ndarray, translation_m: float, rotation_deg: float) -> list[tuple[int, int]]:
    """``(i, j)``: frame ``j`` returns within the tolerances to the pose of an earlier frame
    ``i`` after the camera left it (some frame between lies outside them); the earliest
    such ``i`` for each ``j``."""
    pos = poses[:, :3, 3]
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    rots = poses[:, :3, :3]
    cos = (np.einsum("iab,jab->ij", rots, rots) - 1.0) / 2.0  # trace(R_i^T R_j)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    near = (dist <= translation_m) & (angle <= rotation_deg)
    away = np.cumsum(~near, axis=1)  # frames so far that lie outside frame i's tolerance
    pairs = []
    for j in range(2, len(poses)):
        left = near[:j, j] & (away[:j, j - 1] > away[np.arange(j), np.arange(j)])
        if left.any():
            pairs.append((int(np.argmax(left)), j))
    return pairs


# --------------------------------------------------------------------------- the score


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def score_rollout(
    frames,
    poses,
    intrinsics,
    depths=None,
    *,
    loop_translation_m: float = 0.05,
    loop_rotation_deg: float = 2.0,
) -> dict:
    """World-consistency scores of one rollout (see the module docstring for each score).

    Args:
        frames: ``(T, H, W, 3)`` uint8, ``T >= 2``.
        poses: ``(T, 4, 4)`` camera-to-world, OpenCV axes (the env's ``info["pose"]``).
        intrinsics: ``(3, 3)`` pixel matrix (``info["intrinsics"]``), pixel centres at ``i + 0.5``.
        depths: optional ``(T, H, W)`` (or ``(T, H, W, 1)``, the env's ``obs["depth"]``)
            z-depth in metres, ``inf`` for sky, 0 where unknown. Enables PnP for camera control and the
            reprojection score.
        loop_translation_m, loop_rotation_deg: how close a later pose must come to an
            earlier one to count as a return.

    Returns a dict of floats: ``camera_rotation_error_deg``, ``camera_translation_error_deg``
    (means over the ``T - 1`` consecutive pairs, lower is better), ``photometric_cycle_error``
    (pixels, lower is better), ``reprojection_psnr`` (dB, NaN without depths) and
    ``reprojection_visible`` (share of pixels it covers), ``loop_psnr`` (dB, NaN without a
    return) and ``loops``, ``sharpness`` (mean gradient magnitude, [0, 1] intensity per
    pixel); plus ``per_pair`` (arrays of length ``T - 1``: ``rotation_error_deg``,
    ``translation_error_deg``, ``cycle_error``, ``reprojection_psnr``, ``tracks``,
    ``method``), ``per_frame`` (``sharpness``) and ``loop_pairs`` (``(i, j, psnr)``).
    """
    frames, poses, k, depths = check_rollout(frames, poses, intrinsics, depths)
    k_cv = _opencv_intrinsics(k)
    grays = [_gray(f) for f in frames]
    dis = dense_flow()
    n = len(frames) - 1
    pair = {
        "rotation_error_deg": np.zeros(n),
        "translation_error_deg": np.full(n, np.nan),
        "cycle_error": np.zeros(n),
        "photometric_residual": np.zeros(n),
        "reprojection_psnr": np.full(n, np.nan),
        "reprojection_visible": np.zeros(n),
        "tracks": np.zeros(n, dtype=np.int64),
        "method": [],
    }
    for i in range(n):
        to_next = np.linalg.inv(poses[i + 1]) @ poses[i]  # camera i coordinates -> camera i+1
        p0, p1 = track_corners(grays[i], grays[i + 1])
        rot, t, moves, method = estimate_motion(p0, p1, k_cv, None if depths is None else depths[i])
        pair["rotation_error_deg"][i] = rotation_angle_deg(rot.T @ to_next[:3, :3])
        cmd_t = to_next[:3, 3]
        if np.linalg.norm(cmd_t) > STILL_M:  # direction is undefined for a camera that only turns
            pair["translation_error_deg"][i] = direction_error_deg(t, cmd_t, moves)
        pair["tracks"][i] = len(p0)
        pair["method"].append(method)
        pair["cycle_error"][i], pair["photometric_residual"][i] = flow_consistency(frames[i], frames[i + 1], grays[i], grays[i + 1], dis)
        if depths is not None:
            image, visible = reproject(frames[i], depths[i], depths[i + 1], k, np.linalg.inv(to_next))
            pair["reprojection_psnr"][i] = masked_psnr(image, frames[i + 1], visible)
            pair["reprojection_visible"][i] = visible.mean()
    loops = loop_pairs(poses, loop_translation_m, loop_rotation_deg)
    loop_scores = [(i, j, masked_psnr(frames[i], frames[j])) for i, j in loops]
    sharpness = np.array([gradient_energy(f) for f in frames])
    return {
        "camera_rotation_error_deg": _mean(pair["rotation_error_deg"]),
        "camera_translation_error_deg": _mean(pair["translation_error_deg"]),
        "photometric_cycle_error": _mean(pair["cycle_error"]),
        "photometric_residual": _mean(pair["photometric_residual"]),
        "reprojection_psnr": _mean(pair["reprojection_psnr"]),
        "reprojection_visible": float(pair["reprojection_visible"].mean()) if depths is not None else float("nan"),
        "loop_psnr": _mean([s for _, _, s in loop_scores]),
        "loops": len(loop_scores),
        "sharpness": float(sharpness.mean()),
        "pairs": n,
        "per_pair": pair,
        "per_frame": {"sharpness": sharpness},
        "loop_pairs": loop_scores,
    }
