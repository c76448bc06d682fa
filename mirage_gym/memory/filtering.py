"""Which pixels may enter memory: never sky, never moving objects.

Written memory is permanent (first confident write wins), so anything that will not be
there on return must be filtered before the write: sky (non-finite or beyond ``far``
depth, or a sky label) and dynamic objects (a label, or a user mask). The complementary
reprojection-residual check against memory lives in the memories' ``write`` (``residual_tolerance``).
"""

from __future__ import annotations

import numpy as np
import torch

from mirage_gym.constants import FAR

LABEL_STATIC = 0
LABEL_SKY = 1
LABEL_DYNAMIC = 2


def static_keep_mask(depth, labels=None, dynamic_mask=None, far: float = FAR) -> torch.Tensor:
    """Bool (H, W) mask of pixels safe to remember (or (B, H, W) for a batch of frames).

    Args:
        depth: (H, W) z-depth, ``inf`` for sky.
        labels: optional (H, W) ints; only ``LABEL_STATIC`` pixels are kept.
        dynamic_mask: optional (H, W) bool, True on moving objects (e.g. from a user).
        far: pixels at or beyond this depth count as sky.
    """
    d = torch.as_tensor(np.asarray(depth) if not isinstance(depth, torch.Tensor) else depth)
    if d.ndim not in (2, 3):
        raise ValueError(f"depth must have shape (H, W) or (B, H, W), got {tuple(d.shape)}")
    keep = torch.isfinite(d) & (d > 0) & (d < far)
    for name, extra in (("labels", labels), ("dynamic_mask", dynamic_mask)):
        if extra is None:
            continue
        t = torch.as_tensor(np.asarray(extra) if not isinstance(extra, torch.Tensor) else extra).to(d.device)
        if tuple(t.shape) != tuple(d.shape):
            raise ValueError(f"{name} must have shape {tuple(d.shape)} like depth, got {tuple(t.shape)}")
        keep &= (t == LABEL_STATIC) if name == "labels" else ~t.bool()
    return keep
