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


# ---------------------------------------------------------------- structure of invented views
# Every PSNR figure rewards fog (against one true answer the conditional mean scores best) and
# frame-level sharpness is dominated by remembered cells. The three measures below compare the
# *statistics* of a region with the true render's, so neither fog (blur) nor noise can win:
# blur loses gradient energy and moves edge pixels into the flat bin; noise gains energy,
# spreads orientations uniformly and smears colours.

EDGE_BINS = 12  # orientation bins over [0, 180) degrees
EDGE_THRESHOLD = 0.03  # luminance gradient (per pixel, [0, 1] scale) below which a pixel is "flat"
COLOR_BINS = 8  # per RGB channel


def _luminance_gradients(a) -> tuple[np.ndarray, np.ndarray]:
    """(magnitude, orientation in degrees [0, 360)) of the luminance gradient of one
    (H, W, 3) image (uint8 or [0, 1] floats), by OpenCV's Sobel, per pixel on the [0, 1] scale."""
    import cv2

    img = np.asarray(a)
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    lum = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    return cv2.cartToPolar(gx, gy, angleInDegrees=True)


def _as_uint8(a) -> np.ndarray:
    """An image as uint8 (floats are read on the [0, 1] scale)."""
    img = np.asarray(a)
    return img if img.dtype == np.uint8 else (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _region(mask, shape) -> np.ndarray:
    return np.ones(shape[:2], bool) if mask is None else np.asarray(mask, bool)


def region_sharpness(generated, reference, mask=None) -> float:
    """Mean Sobel gradient magnitude of ``generated`` over ``mask`` (default: all pixels)
    relative to ``reference``'s over the same pixels: 1 = as sharp as the true render, fog
    below 1, noise far above it."""
    m = _region(mask, np.shape(generated))
    if not m.any():
        return float("nan")
    ref = float(_luminance_gradients(reference)[0][m].mean())
    return float("nan") if ref == 0 else float(_luminance_gradients(generated)[0][m].mean()) / ref


def edge_orientation_histogram(image, mask=None, bins: int = EDGE_BINS, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Share of the region's pixels in each of ``bins`` edge orientations (modulo 180
    degrees, counted where the gradient exceeds ``threshold``) plus a last bin of flat
    pixels; sums to 1."""
    mag, ang = _luminance_gradients(image)
    m = _region(mask, mag.shape)
    mag, ang = mag[m], ang[m] % 180.0
    edge = mag >= threshold
    counts = np.bincount(np.minimum((ang[edge] / (180.0 / bins)).astype(int), bins - 1), minlength=bins)
    hist = np.append(counts, (~edge).sum()).astype(np.float64)
    return hist / max(1.0, hist.sum())


def edge_orientation_distance(generated, reference, mask=None, eps: float = 1e-3) -> float:
    """KL divergence KL(reference || generated) of the regions' edge-orientation histograms
    (:func:`edge_orientation_histogram`, with a flat bin so blur counts too); 0 = the same
    edge statistics. Compare with :func:`white_noise_orientation_distance`."""
    if mask is not None and not np.asarray(mask, bool).any():
        return float("nan")
    p = edge_orientation_histogram(reference, mask) + eps
    q = edge_orientation_histogram(generated, mask) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def white_noise_orientation_distance(reference, mask=None, seed: int = 0) -> float:
    """:func:`edge_orientation_distance` of uniform white noise to ``reference``: the figure a
    generator that paints noise scores (the issue's bar is half of it)."""
    noise = np.random.default_rng(seed).integers(0, 256, size=np.shape(reference), dtype=np.uint8)
    return edge_orientation_distance(noise, reference, mask)


def color_histogram_distance(generated, reference, mask=None, bins: int = COLOR_BINS) -> float:
    """Bhattacharyya distance (OpenCV ``compareHist``) of the regions' joint RGB histograms,
    ``bins`` per channel: 0 = the same colours, 1 = no colour in common."""
    import cv2

    m = _region(mask, np.shape(generated))
    if not m.any():
        return float("nan")
    cv_mask = m.astype(np.uint8)

    def hist(a):
        h = cv2.calcHist([np.ascontiguousarray(_as_uint8(a))], [0, 1, 2], cv_mask, [bins] * 3, [0, 256] * 3)
        return h / max(1.0, float(h.sum()))

    return float(cv2.compareHist(hist(generated), hist(reference), cv2.HISTCMP_BHATTACHARYYA))


def off_palette_share(generated, reference, mask=None, bins: int = COLOR_BINS, floor: float = 0.005) -> float:
    """Share of the region's pixels whose colour (joint RGB bin, ``bins`` per channel) holds
    under ``floor`` of the reference region's pixels: colours the true view does not have.
    Why: cell-sized flecks of foreign hues (magenta in a green brick room) keep a room's
    gradient energy and edge orientations and move the colour histogram little; this counts them."""
    m = _region(mask, np.shape(generated))
    if not m.any():
        return float("nan")

    def bin_of(a):
        q = _as_uint8(a)[m].astype(np.int64) * bins // 256
        return (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]

    held = np.bincount(bin_of(reference), minlength=bins**3) / m.sum()
    return float((held[bin_of(generated)] < floor).mean())


STRUCTURE_BARS = {"sharpness": (0.7, 1 / 0.7), "color_distance": 0.35}  # orientation: below half of noise's


def structure_scores(generated, reference, mask=None) -> dict:
    """The structure measures of one view's region (default: the whole view), with white
    noise's orientation distance for the same reference, the off-palette share (no bar), and
    ``passes``: sharpness
    within [0.7, 1/0.7] of the true render's, orientation distance below half of white
    noise's, colour distance below 0.35."""
    s = {
        "sharpness": region_sharpness(generated, reference, mask),
        "orientation_distance": edge_orientation_distance(generated, reference, mask),
        "noise_orientation_distance": white_noise_orientation_distance(reference, mask),
        "color_distance": color_histogram_distance(generated, reference, mask),
        "off_palette": off_palette_share(generated, reference, mask),
    }
    lo, hi = STRUCTURE_BARS["sharpness"]
    s["passes"] = bool(lo <= s["sharpness"] <= hi and s["orientation_distance"] < 0.5 * s["noise_orientation_distance"]
                       and s["color_distance"] < STRUCTURE_BARS["color_distance"])
    return s


def score_rollout(frames, poses, intrinsics, depths=None, **tolerances) -> dict:
    """World-consistency scores of a rollout from OpenCV geometry, no network weights:
    ``camera_rotation_error_deg``, ``camera_translation_error_deg``, ``photometric_cycle_error``,
    ``photometric_residual``, ``reprojection_psnr``, ``loop_psnr``, ``sharpness`` and per-pair
    arrays. Arguments, figures and failure modes: :func:`mirage_gym.consistency.score_rollout`."""
    from mirage_gym.consistency import score_rollout as score  # OpenCV loads only when scoring

    return score(frames, poses, intrinsics, depths, **tolerances)
