"""Flow-matching sampler, kept apart from the model (as diffusers' schedulers are).

Convention (diffusers' flow matching): ``x_sigma = (1 - sigma) * x0 + sigma * noise``,
sigma from 1 (pure noise) to 0. The model predicts ``x0``; an Euler step on the flow
``dx/dsigma = (x - x0) / sigma`` lands on ``x0`` exactly at ``sigma = 0``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class FlowMatchEulerSampler:
    """Euler steps over ``steps`` equally spaced noise levels, optionally shifted toward
    high noise (``shift`` > 1, as Wan's schedulers do)."""

    def __init__(self, steps: int = 3, shift: float = 1.0):
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        self.steps, self.shift = int(steps), float(shift)

    def sigmas(self) -> torch.Tensor:
        """The ``steps + 1`` noise levels, from 1 down to 0."""
        s = torch.linspace(1.0, 0.0, self.steps + 1)
        return self.shift * s / (1 + (self.shift - 1) * s)

    def sample(self, predict_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
               known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the steps from ``noise``; ``predict_x0(x, sigma (B,))`` is the model.

        ``known`` / ``known_mask`` (B, 1, h, w) hold cells fixed (inpainting, as RePaint
        does): every step's ``x0`` takes ``known`` there, so the sample ends exactly on it
        and the model only fills the rest, in agreement with what it was given.
        """
        x = noise
        sigmas = self.sigmas().tolist()
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x0 = predict_x0(x, torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype))
            if known is not None:
                x0 = torch.where(known_mask > 0, known, x0)
            x = x0 + (sigma_next / sigma) * (x - x0)
        return x
