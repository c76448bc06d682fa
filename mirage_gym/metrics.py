"""Image and depth metrics without network weights: PSNR, SSIM, sharpness, AbsRel, and
:func:`score_rollout`, the world-consistency scores of a whole rollout (camera control,
photometric and 3D consistency, loop closure; see :mod:`mirage_gym.consistency`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _float_images(a) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 / [0, 1] float -> (N, 3, H, W) float64 in [0, 1]."""
    t = torch.as_tensor(np.asarray(a))
    scale = 255.0 if t.dtype == torch.uint8 else 1.0
    t = t.double() / scale
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3) or (N, H, W, 3), got {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB of two RGB images (uint8 or [0, 1] floats)."""
    x, y = _float_images(a), _float_images(b)
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


PSNR_CAP_DB = 100.0  # identical frames have infinite PSNR; means and JSON want a number


def capped_psnr(a, b) -> float:
    """:func:`psnr` capped at :data:`PSNR_CAP_DB` (for averaging loops that close exactly)."""
    return min(psnr(a, b), PSNR_CAP_DB)


def ssim(a, b, window: int = 7, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, mean over RGB."""
    x, y = _float_images(a), _float_images(b)
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    kernel = g.expand(3, 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, groups=3)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx**2
    vy = blur(y * y) - my**2
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def gradient_energy(a) -> float:
    """Mean image-gradient magnitude (finite differences on luminance)."""
    x = _float_images(a)
    lum = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    gx = lum[:, :, 1:] - lum[:, :, :-1]
    gy = lum[:, 1:, :] - lum[:, :-1, :]
    return float((gx[:, :-1, :] ** 2 + gy[:, :, :-1] ** 2).sqrt().mean())


def sharpness_ratio(generated, reference) -> float:
    """Gradient energy of ``generated`` relative to ``reference`` (1.0 = as sharp; blur < 1)."""
    ref = gradient_energy(reference)
    return float("nan") if ref == 0 else gradient_energy(generated) / ref


def depth_abs_rel(predicted, true) -> float:
    """Mean |pred - true| / true over pixels where both are finite and positive."""
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    valid = np.isfinite(p) & np.isfinite(t) & (t > 0)
    if not valid.any():
        return float("nan")
    return float(np.mean(np.abs(p[valid] - t[valid]) / t[valid]))


def sky_agreement(predicted, true) -> float:
    """Share of pixels where prediction and truth agree on sky (non-finite) vs surface."""
    return float(np.mean(np.isfinite(np.asarray(predicted)) == np.isfinite(np.asarray(true))))


def score_rollout(frames, poses, intrinsics, depths=None, **tolerances) -> dict:
    """World-consistency scores of a rollout from OpenCV geometry, no network weights:
    ``camera_rotation_error_deg``, ``camera_translation_error_deg``, ``photometric_cycle_error``,
    ``photometric_residual``, ``reprojection_psnr``, ``loop_psnr``, ``sharpness`` and per-pair
    arrays. Arguments, figures and failure modes: :func:`mirage_gym.consistency.score_rollout`."""
    from mirage_gym.consistency import score_rollout as score  # OpenCV loads only when scoring

    return score(frames, poses, intrinsics, depths, **tolerances)
