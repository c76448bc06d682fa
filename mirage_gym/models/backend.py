"""The world model the world core runs: codec + generator + sampler, saved as a directory.

Layout of a model directory (no pickles; everything loads offline)::

    mirage_model.json                 format version, latent statistics, sampler settings
    codec/                            diffusers AutoencoderTiny (config.json + safetensors)
    codec_embedding.safetensors       the codec's linear patch embedding and its inverse
    transformer/                      diffusers WanVACETransformer3DModel
    camera_tokens.safetensors         the relative-pose tokenizer

``load_backend("tiny")`` reads the directory shipped inside the package.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from mirage_gym.models.codec import RGBDCodec
from mirage_gym.models.generator import CameraTokens, LatentGenerator
from mirage_gym.models.sampler import FlowMatchEulerSampler

FORMAT_VERSION = 1
MANIFEST = "mirage_model.json"
CAMERA_FILE = "camera_tokens.safetensors"
EMBEDDING_FILE = "codec_embedding.safetensors"
EMBEDDING_KEYS = ("embed.weight", "embed.bias", "unembed.weight", "unembed.bias")  # RGBDCodec's linear path


class ModelLoadError(ValueError):
    """A model directory is missing, incomplete, corrupt or of another format."""


class LatentWorldModel(torch.nn.Module):
    """Implements the world core's ``WorldBackend`` protocol with trained networks."""

    def __init__(self, codec: RGBDCodec, generator: LatentGenerator, sampler: FlowMatchEulerSampler | None = None,
                 hold_memory: bool = True):
        super().__init__()
        self.codec = codec
        self.generator = generator
        self.sampler = sampler or FlowMatchEulerSampler()
        # cells memory shows are kept as remembered (the generator fills only the rest);
        # False lets the generator rewrite them too (its residual over memory)
        self.hold_memory = bool(hold_memory)
        self.eval()

    @property
    def latent_channels(self) -> int:
        return self.codec.latent_channels

    @property
    def downsample(self) -> int:
        return self.codec.downsample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        return self.codec.encode(rgb.to(self.device), None if depth is None else depth.to(self.device))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.codec.decode(latents)

    @torch.no_grad()
    def generate(self, context, memory, mask, memory_depth, camera, noise) -> torch.Tensor:
        context = context[:, -1]  # one frame of context (``context_frames`` is 1)

        def predict(x, sigma):
            return self.generator.predict_x0(x, sigma, context, memory, mask, memory_depth, camera)

        if self.hold_memory:
            return self.sampler.sample(predict, noise, known=memory, known_mask=mask)
        return self.sampler.sample(predict, noise)

    # ------------------------------------------------------------------ files

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.codec.autoencoder.save_pretrained(path / "codec")
        codec_state = self.codec.state_dict()
        save_file({k: codec_state[k].contiguous() for k in EMBEDDING_KEYS}, path / EMBEDDING_FILE)
        self.generator.transformer.save_pretrained(path / "transformer")
        save_file({k: v.contiguous() for k, v in self.generator.camera_tokens.state_dict().items()}, path / CAMERA_FILE)
        manifest = {
            "format_version": FORMAT_VERSION,
            "latents_mean": self.codec.latents_mean.tolist(),
            "latents_std": self.codec.latents_std.tolist(),
            "codec": {"patch_size": self.codec.patch_size},
            "camera_tokens": {"dim": self.generator.camera_tokens.dim, "tokens": self.generator.camera_tokens.tokens},
            "sampler": {"steps": self.sampler.steps, "shift": self.sampler.shift, "hold_memory": self.hold_memory},
        }
        (path / MANIFEST).write_text(json.dumps(manifest, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", sampler_steps: int | None = None):
        """Load a model directory; raises :class:`ModelLoadError` naming what is wrong."""
        from diffusers import AutoencoderTiny, WanVACETransformer3DModel
        from safetensors.torch import load_file

        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ModelLoadError(f"no model at {path}: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{manifest_path} is not valid JSON: {exc}") from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(
                f"{manifest_path} has format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        for part in ("codec", "transformer"):
            weights = path / part / "diffusion_pytorch_model.safetensors"
            if not weights.is_file():
                raise ModelLoadError(f"model weights missing: {weights}")
        for name in (CAMERA_FILE, EMBEDDING_FILE):
            if not (path / name).is_file():
                raise ModelLoadError(f"model weights missing: {path / name}")
        try:
            codec = RGBDCodec(_quiet_load(AutoencoderTiny, path / "codec"), int(manifest["codec"]["patch_size"]))
            embedding = load_file(path / EMBEDDING_FILE)
            for name in ("embed", "unembed"):
                getattr(codec, name).load_state_dict({k: embedding[f"{name}.{k}"] for k in ("weight", "bias")})
            codec.latents_mean.copy_(torch.tensor(manifest["latents_mean"]))
            codec.latents_std.copy_(torch.tensor(manifest["latents_std"]))
            transformer = _quiet_load(WanVACETransformer3DModel, path / "transformer")
            cam = manifest["camera_tokens"]
            camera_tokens = CameraTokens(int(cam["dim"]), int(cam["tokens"]))
            camera_tokens.load_state_dict(load_file(path / CAMERA_FILE))
        except ModelLoadError:
            raise
        except Exception as exc:  # diffusers/safetensors raise many types for a broken file
            raise ModelLoadError(f"could not load the model at {path}: {type(exc).__name__}: {exc}") from exc
        steps = sampler_steps if sampler_steps is not None else int(manifest["sampler"]["steps"])
        sampler = FlowMatchEulerSampler(steps, float(manifest["sampler"].get("shift", 1.0)))
        hold = bool(manifest["sampler"].get("hold_memory", False))
        return cls(codec, LatentGenerator(transformer, camera_tokens), sampler, hold_memory=hold).to(device)


def _quiet_load(cls, folder: Path):
    """``from_pretrained`` offline, without diffusers' notice that ``AutoencoderTiny``'s own
    saved config carries a ``block_out_channels`` key its constructor ignores."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(folder, local_files_only=True)
    finally:
        diffusers_logging.set_verbosity(level)


def shipped_model_path() -> Path:
    """The directory of the embedded default model inside the package."""
    return Path(str(resources.files("mirage_gym").joinpath("weights", "tiny")))


def load_backend(model: str | Path = "tiny", device: str | torch.device = "cpu", addon: str | Path | None = None,
                 depth_model: str | Path | None = None, dtype: str = "float32"):
    """``"tiny"`` (the shipped weights), a local model directory of the tiny layout, or a
    diffusers Wan2.2-TI2V directory (recognised by its ``model_index.json``) with an optional
    Mirage ``addon`` and a ``depth_model``; never touches a hub."""
    path = shipped_model_path() if str(model) == "tiny" else Path(model)
    if not path.is_dir():
        raise ModelLoadError(f"no model at {path}: not a directory (a model directory holds {MANIFEST}, "
                             "or model_index.json for Wan2.2)")
    from mirage_gym.models.wan import WanWorldModel, is_wan_directory

    if is_wan_directory(path):
        return WanWorldModel.from_pretrained(path, addon=addon, depth_model=depth_model, device=device, dtype=dtype)
    if addon is not None or depth_model is not None:
        raise ModelLoadError(f"addon and depth_model apply to a Wan2.2 directory; {path} is a tiny-layout model")
    if dtype != "float32":
        raise ModelLoadError(f"the tiny-layout model at {path} runs in float32, got dtype={dtype!r}")
    return LatentWorldModel.from_pretrained(path, device=device)
