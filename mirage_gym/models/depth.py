"""Metric depth for generated frames: a transformers depth-estimation model from a local
directory (metric Depth Anything V2 is the intended one), run batched on the model's device.

Memory lifts every latent cell with depth, so the depth must be metric: a relative-depth
checkpoint (disparity up to scale) is refused. Preprocessing follows the directory's
``preprocessor_config.json`` (short side to ``size``, sides rounded to a multiple of
``ensure_multiple_of``, mean / std normalisation) but runs in torch, on the frames'
device, with no round trip through PIL.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DepthEstimator:
    """Frames (B, 3, H, W) in [0, 1] -> z-depth (B, 1, H, W) in metres."""

    def __init__(self, model, size: int = 518, multiple: int = 14, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.model = model.eval()
        self.size, self.multiple = int(size), int(multiple)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.size / min(height, width)
        return tuple(max(self.multiple, round(side * scale / self.multiple) * self.multiple) for side in (height, width))

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        x = F.interpolate(rgb.to(self.device).float(), size=self.input_size(height, width), mode="bicubic",
                          align_corners=False).clamp(0, 1)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        dtype = next(self.model.parameters()).dtype
        depth = self.model(pixel_values=x.to(dtype)).predicted_depth.float()
        if depth.ndim == 3:
            depth = depth[:, None]
        return F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False).clamp(min=1e-3)

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", error=ValueError) -> DepthEstimator:
        """Load a local directory; ``error`` is raised, naming the path, for anything wrong."""
        from transformers import AutoConfig, AutoModelForDepthEstimation

        path = Path(path)
        if not (path / "config.json").is_file():
            raise error(f"no depth model at {path}: config.json is missing")
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # transformers raises many types for a bad config
            raise error(f"could not read the depth model config at {path}: {type(exc).__name__}: {exc}") from exc
        if getattr(config, "depth_estimation_type", "metric") == "relative":
            raise error(f"the depth model at {path} predicts relative depth; memory needs metric depth "
                        "(use a metric checkpoint, depth_estimation_type='metric')")
        try:
            model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True).to(device)
        except Exception as exc:
            raise error(f"could not load the depth model at {path}: {type(exc).__name__}: {exc}") from exc
        options = {}
        processor = path / "preprocessor_config.json"
        if processor.is_file():
            try:
                spec = json.loads(processor.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise error(f"{processor} is not valid JSON: {exc}") from exc
            size = spec.get("size", {})
            side = min(size.values()) if isinstance(size, dict) and size else size
            if isinstance(side, int):
                options["size"] = side
            for key, name in (("ensure_multiple_of", "multiple"), ("image_mean", "mean"), ("image_std", "std")):
                if key in spec:
                    options[name] = spec[key]
        else:
            options["size"] = getattr(getattr(config, "backbone_config", None), "image_size", 518)
        return cls(model, **options)


# A metric Depth Anything of the real classes at test size (transformers builds it offline).
TINY_DEPTH_ANYTHING = {
    "backbone": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
                 "image_size": 56, "patch_size": 14},
    "head": {"reassemble_hidden_size": 32, "neck_hidden_sizes": [16] * 4, "fusion_hidden_size": 16,
             "head_hidden_size": 16, "patch_size": 14},
}
# Depth Anything V2 Large, metric (its public config), for the benchmark's random build.
DEPTH_ANYTHING_V2_LARGE = {
    "backbone": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                 "image_size": 518, "patch_size": 14},
    "head": {"reassemble_hidden_size": 1024, "neck_hidden_sizes": [256, 512, 1024, 1024], "fusion_hidden_size": 256,
             "head_hidden_size": 32, "patch_size": 14},
}


def random_depth_anything(spec: dict = TINY_DEPTH_ANYTHING, max_depth: int = 20):
    """A metric Depth Anything of ``spec``'s size with random weights (tests, benchmarks)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    layers = spec["backbone"]["num_hidden_layers"]
    picks = [f"stage{i}" for i in range(layers // 4, layers + 1, max(1, layers // 4))][-4:]
    backbone = Dinov2Config(**spec["backbone"], reshape_hidden_states=False, out_features=picks)
    config = DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=max_depth,
                                 **spec["head"])
    return DepthAnythingForDepthEstimation(config).eval()


def save_random_depth_anything(path: str | Path, spec: dict = TINY_DEPTH_ANYTHING, seed: int = 0) -> Path:
    """Write a metric Depth Anything directory with random weights."""
    torch.manual_seed(seed)
    random_depth_anything(spec).save_pretrained(path)
    return Path(path)
