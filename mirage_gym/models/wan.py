"""The Wan2.2 world model: a TI2V DiT carrying the Mirage add-on, Wan's causal video VAE and
a metric depth model, behind the world core's backend protocol.

One world step generates one latent frame (the VAE's 4 video frames) for every world at
once. The DiT sees the sequence ``[preceding latent frames (t = 0) | noisy target]`` with
per-token timesteps, which is TI2V's own image-to-video layout (clean conditioning frames
first), so the base model with a zero add-on continues the video as it was trained to;
the memory projected at the target pose reaches it through the VACE branch (zeros over
the preceding frames). Sampling is UniPC on flow sigmas (the directory's scheduler: shift
5, 20 steps), without classifier-free guidance. Remembered cells are held: their flow is
set so that every step's clean estimate equals memory there, and the result takes memory's
values exactly, so loops close as with the embedded model.

A base directory has the layout of ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``: ``model_index.json``,
``transformer/`` (``WanTransformer3DModel``), ``vae/`` (``AutoencoderKLWan``), ``scheduler/``,
and optionally ``text_encoder/`` + ``tokenizer/`` for prompts. Everything loads offline.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from mirage_gym.files import read_json_object
from mirage_gym.models.backend import ModelLoadError
from mirage_gym.models.depth import DepthEstimator
from mirage_gym.models.generator import CONTROL_EXTRA, control_input
from mirage_gym.models.vace import DEFAULT_LORA, AddonLoadError, addon_from_base, attach_lora, load_addon_weights, \
    read_addon_manifest
from mirage_gym.models.video_codec import DecodeStream, WanVideoCodec

WAN_INDEX = "model_index.json"
TEXT_TOKENS = 512  # Wan's prompt length: embeddings are zero-padded to it
CONTEXT_FRAMES = 2  # preceding latent frames the DiT sees (8 video frames)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The public Wan2.2-TI2V-5B architecture (its config files), for the benchmark's random build.
TI2V_5B_TRANSFORMER = {
    "patch_size": (1, 2, 2), "num_attention_heads": 24, "attention_head_dim": 128, "in_channels": 48,
    "out_channels": 48, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 14336, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}
TI2V_5B_VAE = {
    "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12, "out_channels": 12,
    "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
    "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48,
}
# The same classes at the sizes of diffusers' own Wan2.2 TI2V tests (CPU, seconds).
TINY_TRANSFORMER = {
    "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 48,
    "out_channels": 48, "text_dim": 32, "freq_dim": 256, "ffn_dim": 32, "num_layers": 2,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32,
}
TINY_VAE = {
    "base_dim": 3, "z_dim": 48, "in_channels": 12, "out_channels": 12, "is_residual": True, "patch_size": 2,
    "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
    "temperal_downsample": [False, True, True], "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48,
}
SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0,
             "num_train_timesteps": 1000}


class WanWorldModel:
    """Implements the world core's ``WorldBackend`` protocol with a Wan2.2 base + add-on."""

    def __init__(self, transformer, vae, scheduler_config: dict, depth: DepthEstimator, sampler_steps: int = 20,
                 hold_memory: bool = True, context_frames: int = CONTEXT_FRAMES, text_encoder_path: Path | None = None):
        if sampler_steps < 1:
            raise ValueError(f"sampler_steps must be at least 1, got {sampler_steps}")
        if transformer.config.vace_in_channels != vae.config.z_dim + CONTROL_EXTRA:
            raise ValueError(f"the add-on takes {transformer.config.vace_in_channels} control channels; this world "
                             f"gives {vae.config.z_dim + CONTROL_EXTRA} (latent + mask, depth, rays)")
        self.transformer = transformer.eval()
        self.codec = WanVideoCodec(vae.eval())
        self.scheduler_config = dict(scheduler_config)
        self.depth = depth
        self.sampler_steps = int(sampler_steps)
        self.hold_memory = bool(hold_memory)
        self.context_frames = int(context_frames)
        self.latent_channels = self.codec.latent_channels
        self.downsample = self.codec.downsample
        self.frames_per_latent = self.codec.frames_per_latent
        self.size_multiple = self.downsample * int(transformer.config.patch_size[1])
        self.text_encoder_path = text_encoder_path
        self._text = None  # (tokenizer, encoder), loaded on the first prompt

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def takes_prompts(self) -> bool:
        return self.text_encoder_path is not None

    @property
    def dtype(self) -> torch.dtype:
        """The DiT's compute dtype (its norms and modulation tables stay float32)."""
        return self.transformer.patch_embedding.weight.dtype

    # ------------------------------------------------------------------ protocol

    def new_stream(self) -> DecodeStream:
        return self.codec.new_stream()

    def encode(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Wan's VAE codes RGB only; known depth reaches memory through the world, not the latent."""
        return self.codec.encode(rgb)

    def decode(self, latents: torch.Tensor, streams: list[DecodeStream] | None = None):
        """Frames (B, T, 3, H, W) continuing each world's stream, and the metric depth of the
        last frame (B, 1, H, W) from the depth model."""
        if streams is None:
            streams = [self.new_stream() for _ in range(latents.shape[0])]
        frames = self.codec.decode(latents, streams)
        return frames, self.depth(frames[:, -1])

    def embed_prompt(self, prompt: str | None) -> torch.Tensor:
        """(1, 512, text_dim) prompt embeddings, zero-padded as Wan's pipelines pad them;
        zeros for no prompt."""
        dim = int(self.transformer.config.text_dim)
        if prompt is None:
            return torch.zeros(1, TEXT_TOKENS, dim, device=self.device, dtype=self.dtype)
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        tokenizer, encoder = self._text_encoder()
        tokens = tokenizer([prompt], padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                           add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        length = int(tokens.attention_mask.sum())
        with torch.no_grad():
            hidden = encoder(tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)).last_hidden_state
        embeds = torch.zeros(1, TEXT_TOKENS, hidden.shape[-1], device=self.device, dtype=self.dtype)
        embeds[:, :length] = hidden[:, :length].to(self.dtype)
        return embeds

    @torch.no_grad()
    def generate(self, context, memory, mask, memory_depth, camera, noise, text=None) -> torch.Tensor:
        """Next latent frame (B, C, h, w) from the preceding frames ``context`` (B, K, C, h, w,
        oldest first), memory at the target pose, the relative camera and the noise."""
        from diffusers import UniPCMultistepScheduler

        device, dtype = self.device, self.dtype
        batch, frames = context.shape[:2]
        _, p_h, p_w = self.transformer.config.patch_size
        per_frame = (memory.shape[-2] // p_h) * (memory.shape[-1] // p_w)
        memory, mask = memory.to(device).float(), mask.to(device).float()
        clean = context.to(device, dtype).transpose(1, 2)  # (B, C, K, h, w)
        target_control = control_input(memory, mask, memory_depth.to(device), camera.to(device))
        control = torch.cat([target_control.new_zeros(*target_control.shape[:2], frames, *target_control.shape[-2:]),
                             target_control], 2).to(dtype)
        if text is None:
            text = self.embed_prompt(None).expand(batch, -1, -1)
        text = text.to(device, dtype)
        scheduler = UniPCMultistepScheduler.from_config(self.scheduler_config)  # a fresh one: it keeps state
        scheduler.set_timesteps(self.sampler_steps, device=device)
        x = noise.to(device).float()
        held = mask > 0
        for i, t in enumerate(scheduler.timesteps):
            timestep = torch.cat([torch.zeros(batch, frames * per_frame, device=device),
                                  torch.full((batch, per_frame), float(t), device=device)], 1)
            hidden = torch.cat([clean, x.to(dtype)[:, :, None]], 2)
            flow = self.transformer(hidden, timestep, text, control, return_dict=False)[0][:, :, -1].float()
            if self.hold_memory:  # the flow whose clean estimate x - sigma * flow is memory
                flow = torch.where(held, (x - memory) / scheduler.sigmas[i].to(device), flow)
            x = scheduler.step(flow, t, x, return_dict=False)[0]
        return torch.where(held, memory, x) if self.hold_memory else x

    # ------------------------------------------------------------------ files

    @classmethod
    def from_pretrained(cls, path: str | Path, addon: str | Path | None = None, depth_model: str | Path | None = None,
                        device="cpu", dtype: str | torch.dtype = "float32", sampler_steps: int | None = None,
                        hold_memory: bool = True) -> WanWorldModel:
        """Load a local Wan2.2-TI2V diffusers directory, an optional Mirage add-on and a depth
        model; raises :class:`ModelLoadError` naming the path for anything missing or wrong."""
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler

        path = Path(path)
        torch_dtype = resolve_dtype(dtype)
        index = read_model_index(path)
        if depth_model is None:
            raise ModelLoadError(f"the Wan base at {path} needs depth_model: a local transformers depth-estimation "
                                 "directory (metric Depth Anything V2), since memory lifts each frame with depth")
        vae = _load(AutoencoderKLWan, path / "vae", torch_dtype=torch.float32)
        scheduler = _load(UniPCMultistepScheduler, path / "scheduler")
        depth = DepthEstimator.from_pretrained(depth_model, device=device, error=ModelLoadError)
        model, _ = transformer_with_addon(path, int(vae.config.z_dim), addon, device=device, dtype=torch_dtype)
        if addon is None:
            warnings.warn(f"no Mirage add-on given for {path}: the VACE branch and LoRA are zero, so the generator is "
                          "the base model and is not conditioned on memory (remembered cells are still held). "
                          "Train an add-on and pass addon=DIR.", stacklevel=2)
        text_path = path if index.get("text_encoder", [None])[0] and (path / "text_encoder").is_dir() else None
        return cls(model, vae.to(device), scheduler.config, depth,
                   sampler_steps=sampler_steps or 20, hold_memory=hold_memory, text_encoder_path=text_path)

    def _text_encoder(self):
        if self.text_encoder_path is None:
            raise ValueError("this Wan directory has no text_encoder/ and tokenizer/: prompts need them")
        if self._text is None:
            from transformers import AutoTokenizer, UMT5EncoderModel

            path = self.text_encoder_path
            try:
                tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
                encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", local_files_only=True,
                                                           dtype=self.dtype).to(self.device).eval()
            except Exception as exc:  # transformers raises many types for broken files
                raise ModelLoadError(f"could not load the text encoder at {path}: {type(exc).__name__}: {exc}") from exc
            self._text = tokenizer, encoder
        return self._text


def transformer_with_addon(base: Path, latent_channels: int, addon: str | Path | None = None, lora: dict | None = None,
                           device="cpu", dtype: torch.dtype = torch.float32):
    """The base DiT of the directory ``base`` carrying a Mirage add-on, loaded from ``addon``
    or fresh and zero (LoRA settings ``lora``, default r 32); returns it and its LoRA settings."""
    from diffusers import WanTransformer3DModel

    transformer = _load(WanTransformer3DModel, Path(base) / "transformer", torch_dtype=dtype)
    layers, vace_in, lora = None, latent_channels + CONTROL_EXTRA, dict(lora or DEFAULT_LORA)
    try:
        if addon is not None:
            manifest = read_addon_manifest(addon)
            layers, vace_in, lora = manifest["vace_layers"], int(manifest["vace_in_channels"]), manifest["lora"]
        model = addon_from_base(transformer.to(device), vace_in, layers)
        attach_lora(model, **lora)
        if addon is not None:
            load_addon_weights(model, addon)
    except AddonLoadError as exc:
        raise ModelLoadError(str(exc)) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"the base transformer at {base} and the add-on {addon} do not fit: {exc}") from exc
    return model, lora


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def is_wan_directory(path: str | Path) -> bool:
    return (Path(path) / WAN_INDEX).is_file()


def read_model_index(path: Path) -> dict:
    """``model_index.json`` of a Wan2.2-TI2V directory, checked for the classes this world runs."""
    index_path = path / WAN_INDEX
    index = read_json_object(index_path, ModelLoadError, f"no Wan model at {path}: {WAN_INDEX} is missing")
    expected = {"transformer": "WanTransformer3DModel", "vae": "AutoencoderKLWan", "scheduler": "UniPCMultistepScheduler"}
    for part, cls in expected.items():
        entry = index.get(part)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == cls):
            raise ModelLoadError(f"{index_path}: {part!r} must be {cls}, got {entry!r}")
    if index.get("transformer_2") not in (None, [None, None]):
        raise ModelLoadError(f"{index_path} is a two-expert Wan model; this world runs the single-DiT TI2V-5B")
    return index


def _load(cls, folder: Path, **kwargs):
    if not (folder / "config.json").is_file() and not (folder / "scheduler_config.json").is_file():
        raise ModelLoadError(f"{cls.__name__} missing: no config in {folder}")
    try:
        return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except Exception as exc:  # diffusers/safetensors raise many types for a broken file
        raise ModelLoadError(f"could not load {cls.__name__} from {folder}: {type(exc).__name__}: {exc}") from exc


def save_random_wan(path: str | Path, transformer_config: dict = TINY_TRANSFORMER, vae_config: dict = TINY_VAE,
                    text_encoder: bool = False, seed: int = 0) -> Path:
    """Write a Wan2.2-TI2V directory of the real classes with random weights (tests,
    benchmarks); ``text_encoder`` adds a tiny UMT5 encoder and a word-level tokenizer."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

    path = Path(path)
    torch.manual_seed(seed)
    WanTransformer3DModel(**transformer_config).save_pretrained(path / "transformer")
    vae = AutoencoderKLWan(**vae_config)
    calibrate_latent_statistics(vae)
    vae.save_pretrained(path / "vae")
    UniPCMultistepScheduler(**SCHEDULER).save_pretrained(path / "scheduler")
    index = {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
             "vae": ["diffusers", "AutoencoderKLWan"], "scheduler": ["diffusers", "UniPCMultistepScheduler"],
             "text_encoder": [None, None], "tokenizer": [None, None]}
    if text_encoder:
        _save_tiny_text_encoder(path, int(transformer_config["text_dim"]))
        index.update(text_encoder=["transformers", "UMT5EncoderModel"], tokenizer=["transformers", "T5TokenizerFast"])
    (path / WAN_INDEX).write_text(json.dumps(index, indent=2))
    return path


@torch.no_grad()
def calibrate_latent_statistics(vae, scenes: int = 8) -> None:
    """Set ``latents_mean`` / ``latents_std`` in ``vae``'s config to the per-channel statistics
    of its latents on procedural views, as a real Wan VAE's config records them, so that
    normalised latents have unit scale. (A random VAE's raw latents are far smaller than the
    noise; trained against them, a flow model learns to predict the noise and ignores x0.)"""
    from mirage_gym.training.data import render_sequences

    multiple = int(vae.config.scale_factor_spatial)
    frames = 1 + 2 * int(vae.config.scale_factor_temporal)  # three latent frames: the first and two chunks
    clips = render_sequences(range(scenes), length=frames, size=4 * multiple, progress=False).rgb
    video = torch.as_tensor(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    raw = vae.encode(video).latent_dist.mode().float()
    vae.register_to_config(latents_mean=raw.mean((0, 2, 3, 4)).tolist(),
                           latents_std=raw.std((0, 2, 3, 4)).clamp_min(1e-6).tolist())


def _save_tiny_text_encoder(path: Path, dim: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    words = "a an the room red blue green wall floor window door table chair lamp tree sky bright dark".split()
    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path / "tokenizer")
    config = UMT5Config(vocab_size=len(vocab), d_model=dim, d_kv=8, d_ff=2 * dim, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8)
    UMT5EncoderModel(config).save_pretrained(path / "text_encoder")
