"""The Mirage add-on on a Wan2.2 DiT: a VACE control branch plus LoRA, and its files.

A base ``WanTransformer3DModel`` (Wan2.2-TI2V-5B) is moved into a
:class:`MirageVACETransformer3DModel`, a diffusers ``WanVACETransformer3DModel`` whose
state-dict names it keeps, extended in one way: per-token timesteps, as TI2V uses them
(conditioning latent frames stay clean at t = 0 while the target frame is denoised).
diffusers 0.42's VACE class takes one timestep per sample only.

The add-on is built fresh (not copied from the DiT): VACE blocks on every second DiT layer,
their hint projections zero-initialised, and LoRA (peft) on the DiT's attention and FFN
linears with its B matrices at zero. A fresh add-on therefore leaves the base model's output
exactly unchanged; training (see the training issue) teaches it to use the memory.

Add-on directory (this project writes it; safetensors + JSON, no pickle)::

    mirage_addon.json                     format, VACE layers and input channels, LoRA settings
    vace.safetensors                      vace_patch_embedding.* and vace_blocks.*
    lora/adapter_config.json              peft adapter config
    lora/adapter_model.safetensors        peft adapter weights (DiT blocks only)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from mirage_gym.files import read_json_object

ADDON_FORMAT = "mirage-addon"
ADDON_VERSION = 1
ADDON_MANIFEST = "mirage_addon.json"
VACE_FILE = "vace.safetensors"
LORA_FOLDER = "lora"
LORA_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "mirage"
# LoRA on the DiT's attention q, k, v, o and both FFN linears, in the main blocks only
LORA_TARGETS = r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"
DEFAULT_LORA = {"r": 32, "alpha": 32, "dropout": 0.05}


class AddonLoadError(ValueError):
    """An add-on directory that is missing, incomplete, corrupt or made for another base."""


def _vace_classes():
    from diffusers import WanVACETransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from diffusers.models.transformers.transformer_wan_vace import WanVACETransformerBlock

    class PerTokenVACEBlock(WanVACETransformerBlock):
        """A VACE block that also takes per-token modulation (B, L, 6, D).

        Between its input and output projections a VACE block computes exactly what a
        ``WanTransformerBlock`` computes on the control stream, so it runs that block's
        forward, which handles both timestep layouts."""

        def forward(self, hidden_states, encoder_hidden_states, control_hidden_states, temb, rotary_emb):
            if self.proj_in is not None:
                control_hidden_states = self.proj_in(control_hidden_states) + hidden_states
            control_hidden_states = WanTransformerBlock.forward(
                self, control_hidden_states, encoder_hidden_states, temb, rotary_emb
            )
            hint = self.proj_out(control_hidden_states) if self.proj_out is not None else None
            return hint, control_hidden_states

    class MirageVACETransformer3DModel(WanVACETransformer3DModel):
        """``WanVACETransformer3DModel`` with per-token timesteps (a 2-D ``timestep``).

        ``control_hidden_states`` must cover the same (frames, h, w) grid as
        ``hidden_states`` (diffusers would silently zero-pad a shorter one)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for block in self.vace_blocks:
                block.__class__ = PerTokenVACEBlock  # same modules and names, per-token forward

        def forward(self, hidden_states, timestep, encoder_hidden_states, control_hidden_states,
                    control_hidden_states_scale=None, return_dict=True, attention_kwargs=None):
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            if control_hidden_states.shape[2:] != hidden_states.shape[2:]:
                raise ValueError(f"control_hidden_states must cover the grid of hidden_states "
                                 f"{tuple(hidden_states.shape[2:])}, got {tuple(control_hidden_states.shape[2:])}")
            batch, _, frames, height, width = hidden_states.shape
            p_t, p_h, p_w = self.config.patch_size
            layers = list(self.config.vace_layers)
            if control_hidden_states_scale is None:
                control_hidden_states_scale = hidden_states.new_ones(len(layers))
            rotary_emb = self.rope(hidden_states)
            hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
            control = self.vace_patch_embedding(control_hidden_states).flatten(2).transpose(1, 2)
            per_token = timestep.ndim == 2
            if per_token and timestep.shape[1] != hidden_states.shape[1]:
                raise ValueError(f"a 2-D timestep must have one entry per token ({hidden_states.shape[1]}), "
                                 f"got {tuple(timestep.shape)}")
            temb, timestep_proj, text, _ = self.condition_embedder(
                timestep.flatten(), encoder_hidden_states, None,
                timestep_seq_len=timestep.shape[1] if per_token else None,
            )
            timestep_proj = timestep_proj.unflatten(2 if per_token else 1, (6, -1))
            checkpoint = torch.is_grad_enabled() and self.gradient_checkpointing

            def run(block, *args):
                return self._gradient_checkpointing_func(block, *args) if checkpoint else block(*args)

            hints = []
            for block in self.vace_blocks:
                hint, control = run(block, hidden_states, text, control, timestep_proj, rotary_emb)
                hints.append(hint)
            for i, block in enumerate(self.blocks):
                hidden_states = run(block, hidden_states, text, timestep_proj, rotary_emb)
                if i in layers:
                    k = layers.index(i)
                    hidden_states = hidden_states + hints[k].to(hidden_states.device) * control_hidden_states_scale[k]
            if per_token:
                shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
                shift, scale = shift.squeeze(2), scale.squeeze(2)
            else:
                shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
            shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
            hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
            hidden_states = self.proj_out(hidden_states)
            hidden_states = hidden_states.reshape(batch, frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
            output = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
            return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    return MirageVACETransformer3DModel


def mirage_transformer_class():
    """The class, built on first use (diffusers' Wan modules are slow to import)."""
    global _MIRAGE_CLASS
    if _MIRAGE_CLASS is None:
        _MIRAGE_CLASS = _vace_classes()
    return _MIRAGE_CLASS


_MIRAGE_CLASS = None


def every_second_layer(num_layers: int) -> list[int]:
    """VACE layers as Mirage places them: 0, 2, 4, ... (15 blocks for 30 layers)."""
    return list(range(0, num_layers, 2))


@torch.no_grad()
def fresh_addon(transformer) -> None:
    """Initialise the VACE branch afresh, its hint projections at zero (a no-op add-on)."""
    for module in (transformer.vace_patch_embedding, transformer.vace_blocks):
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    dim = transformer.scale_shift_table.shape[-1]
    for block in transformer.vace_blocks:
        block.scale_shift_table.normal_().div_(math.sqrt(dim))
        nn.init.zeros_(block.proj_out.weight)
        nn.init.zeros_(block.proj_out.bias)


def addon_from_base(base, vace_in_channels: int, vace_layers: list[int] | None = None):
    """A :class:`MirageVACETransformer3DModel` holding ``base``'s weights (moved, not copied)
    and a fresh, zero add-on; the base's dtype and device are kept."""
    from accelerate import init_empty_weights

    config = {k: v for k, v in base.config.items() if not k.startswith("_")}
    config.update(vace_layers=vace_layers or every_second_layer(config["num_layers"]), vace_in_channels=vace_in_channels)
    cls = mirage_transformer_class()
    with init_empty_weights():  # parameters on "meta": the base's own tensors are assigned below
        model = cls(**config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False, assign=True)
    if unexpected or any(not k.startswith("vace_") for k in missing):
        raise ValueError(f"base transformer does not fit the VACE class: unexpected {unexpected[:5]}, "
                         f"missing {[k for k in missing if not k.startswith('vace_')][:5]}")
    device, dtype = base.device, base.dtype
    model.vace_patch_embedding.to_empty(device=device)
    model.vace_blocks.to_empty(device=device)
    model.rope.to(device)  # its tables are buffers, built on the CPU
    fresh_addon(model)
    cast_like_pretrained(model, dtype, prefixes=("vace_patch_embedding.", "vace_blocks."))
    return model.eval()


def cast_like_pretrained(model, dtype: torch.dtype, prefixes: tuple[str, ...] = ("",)) -> None:
    """Cast the parameters under ``prefixes`` to ``dtype`` as diffusers' ``from_pretrained``
    does: the modules the class keeps in float32 (norms, modulation tables) stay float32."""
    keep_fp32 = set(model._keep_in_fp32_modules or ())
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            param.data = param.data.to(torch.float32 if keep_fp32 & set(name.split(".")) else dtype)


def attach_lora(transformer, r: int = 32, alpha: int = 32, dropout: float = 0.05) -> None:
    """peft LoRA on the DiT's attention and FFN linears; B starts at zero (a no-op)."""
    from peft import LoraConfig

    transformer.add_adapter(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS,
                                       init_lora_weights=True), adapter_name=ADAPTER_NAME)


def vace_state_dict(transformer) -> dict[str, torch.Tensor]:
    return {k: v for k, v in transformer.state_dict().items() if k.startswith(("vace_patch_embedding.", "vace_blocks."))}


def save_addon(transformer, path: str | Path, lora: dict) -> Path:
    """Write the VACE branch and the LoRA adapter of ``transformer`` to ``path``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    path = Path(path)
    (path / LORA_FOLDER).mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vace_state_dict(transformer).items()}, path / VACE_FILE)
    adapter = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, path / LORA_FOLDER / LORA_WEIGHTS)
    transformer.peft_config[ADAPTER_NAME].save_pretrained(path / LORA_FOLDER)
    manifest = {
        "format": ADDON_FORMAT,
        "version": ADDON_VERSION,
        "vace_layers": list(transformer.config.vace_layers),
        "vace_in_channels": int(transformer.config.vace_in_channels),
        "base": {k: transformer.config[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                                                     "in_channels", "out_channels", "text_dim")},
        "lora": dict(lora),
    }
    (path / ADDON_MANIFEST).write_text(json.dumps(manifest, indent=2))
    return path


def read_addon_manifest(path: str | Path) -> dict:
    path = Path(path)
    manifest_path = path / ADDON_MANIFEST
    manifest = read_json_object(manifest_path, AddonLoadError, f"no Mirage add-on at {path}: {ADDON_MANIFEST} is missing")
    if manifest.get("format") != ADDON_FORMAT:
        raise AddonLoadError(f"{manifest_path} is not a Mirage add-on manifest (format {ADDON_FORMAT!r} expected)")
    if manifest.get("version") != ADDON_VERSION:
        raise AddonLoadError(f"{manifest_path} has version {manifest.get('version')!r}, this build reads {ADDON_VERSION}")
    for key in ("vace_layers", "vace_in_channels", "base", "lora"):
        if key not in manifest:
            raise AddonLoadError(f"{manifest_path} lacks {key!r}")
    for name in (VACE_FILE, f"{LORA_FOLDER}/{LORA_WEIGHTS}", f"{LORA_FOLDER}/adapter_config.json"):
        if not (path / name).is_file():
            raise AddonLoadError(f"add-on file missing: {path / name}")
    return manifest


@torch.no_grad()
def load_addon_weights(transformer, path: str | Path) -> None:
    """Load an add-on's VACE weights and LoRA adapter into ``transformer`` (built with the
    manifest's layers and channels, LoRA attached); errors name the file."""
    from peft.utils import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_addon_manifest(path)
    base = {k: transformer.config[k] for k in manifest["base"]}
    if base != manifest["base"]:
        raise AddonLoadError(f"add-on at {path} was trained on another base: {manifest['base']} vs this base {base}")
    try:
        vace = load_file(path / VACE_FILE)
        adapter = load_file(path / LORA_FOLDER / LORA_WEIGHTS)
    except (SafetensorError, OSError) as exc:
        raise AddonLoadError(f"add-on weights at {path} are corrupt: {exc}") from exc
    expected = vace_state_dict(transformer)
    if set(vace) != set(expected) or any(vace[k].shape != expected[k].shape for k in expected):
        raise AddonLoadError(f"{path / VACE_FILE} does not fit the VACE branch {manifest['vace_layers']}")
    transformer.load_state_dict(vace, strict=False)
    try:
        result = set_peft_model_state_dict(transformer, adapter, adapter_name=ADAPTER_NAME)
    except RuntimeError as exc:  # shapes that do not fit the LoRA the manifest describes
        raise AddonLoadError(f"{path / LORA_FOLDER / LORA_WEIGHTS} does not fit: {exc}") from exc
    if result.unexpected_keys:
        raise AddonLoadError(f"{path / LORA_FOLDER / LORA_WEIGHTS} has keys this LoRA lacks: {result.unexpected_keys[:5]}")
