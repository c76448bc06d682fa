"""Train the Mirage add-on (VACE branch, then LoRA) on a Wan2.2-TI2V base, with accelerate.

Samples have the shape of an env step, so training and inference conditions match: a
clip's video is encoded once by Wan's causal VAE (frame 0 alone, then 4 frames per latent
frame); each target latent frame ``k >= 1`` is noised and predicted from the ``K`` latent
frames before it (clean, t = 0, the first frame repeated where the clip has fewer, as a
world does after a reset) and from this project's latent memory built from frames
``0 .. k-1`` of the clip and projected at the target's pose (the pose of its last video
frame), with the world's own write policy. Loss: MSE of the predicted flow against
``noise - x0`` over the target frame only; sigmas from flow matching with shift 5 over
1000 timesteps. Half the samples (``detour_prob``) are *detours*: their context ends 1-3
latent frames before the target, so memory shows what the context does not. Without them
the context explains the next frame and the add-on was measured to ignore memory.

Stages run one after the other, each ``max_steps`` optimizer steps: ``vace`` trains the
control branch with the DiT frozen; ``lora`` then trains LoRA with the VACE branch frozen,
so the DiT adapts to hints that no longer move (the reference trains them apart as well).
Prompts are zero embeddings (a caption-conditioned run would embed ``clip.json``'s caption;
with zeros, text dropout changes nothing and is not applied).

Data, noise and timesteps of optimizer step ``s`` on process ``r`` come from a generator
seeded by (seed, stage, s, r), so runs are reproducible, processes draw different samples
(the data is sharded by construction), and a resumed run continues exactly: the model,
optimizer and RNG states come back from accelerate's ``save_state``. One process writes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mirage_gym import constants

STAGES = ("vace", "lora")
CHECKPOINTS = "checkpoints"
LOG = "train_log.jsonl"
CACHE_FORMAT = 2  # bumped when the cached tensors change (2: poses instead of consecutive cameras)


@dataclass
class WanTrainConfig:
    """Arguments of ``mirage-gym train wan``."""

    base: str  # a local Wan2.2-TI2V diffusers directory
    data: str  # a folder of clips (mirage_gym.clips format) with depths
    out: str  # the add-on directory written (checkpoints and log inside)
    stage: str = "both"  # "vace", "lora" or "both" (vace, then lora)
    max_steps: int = 1000  # optimizer steps per stage
    lr: float = 1e-5
    weight_decay: float = 1e-2
    batch_size: int = 1  # samples per process per step
    grad_clip: float = 1.0
    context_frames: int = 2  # clean preceding latent frames, as the env runs
    detour_prob: float = 0.5  # share of samples whose context ends before the target (see draw_batch)
    max_detour: int = 3  # latent frames between a detour sample's context and its target, at most
    flow_shift: float = 5.0
    checkpoint_every: int = 100
    seed: int = 0
    mixed_precision: str = "no"  # accelerate's: "no" or "bf16"
    gradient_checkpointing: bool = False
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    resume: bool = False

    def stages(self) -> list[str]:
        if self.stage not in (*STAGES, "both"):
            raise ValueError(f"stage must be 'vace', 'lora' or 'both', got {self.stage!r}")
        return list(STAGES) if self.stage == "both" else [self.stage]


@dataclass
class ClipSamples:
    """Everything a clip gives the trainer, at latent resolution (CPU tensors)."""

    latents: torch.Tensor  # (F, C, h, w) normalised latent frames
    memory: torch.Tensor  # (F-1, C, h, w) memory read at target frame k = 1 .. F-1
    mask: torch.Tensor  # (F-1, 1, h, w)
    memory_depth: torch.Tensor  # (F-1, 1, h, w), inf where empty
    poses: torch.Tensor  # (F, 4, 4) c2w pose of each latent frame (its last video frame)

    def camera(self, last_context: int, target: int) -> torch.Tensor:
        """The target's pose in the camera of the last context frame (the env's relative camera)."""
        return torch.linalg.inv(self.poses[last_context]) @ self.poses[target]


def latent_frame_indices(frames: int, temporal: int) -> np.ndarray:
    """The video frame each latent frame of a ``frames``-long clip stands for: 0, then the
    last of each whole chunk (a trailing partial chunk is cut)."""
    return np.concatenate([[0], np.arange(temporal, frames, temporal)])


def context_window(end: int, frames: int) -> list[int]:
    """Latent frames ``end - frames .. end - 1``, frame 0 repeated before the clip starts (as
    a world's window holds the seed after a reset)."""
    return [max(0, j) for j in range(end - frames, end)]


def _remember(memory, clip, frame: int, latent: torch.Tensor, far: float, readout=None) -> None:
    """Write one latent frame with the world's policy (static cells only; cells memory already
    holds, as ``readout`` (the read at this frame) shows, are kept, and a surface closer than
    memory's is not written over)."""
    from mirage_gym.memory import static_keep_mask

    held = None if readout is None else readout.mask[0] > 0
    depth = torch.as_tensor(clip.depths[frame])
    dynamic = None if clip.masks is None else torch.as_tensor(clip.masks[frame])
    keep = static_keep_mask(depth, dynamic_mask=dynamic, far=far)
    memory.write(latent, depth, clip.poses_c2w[frame], clip.intrinsics[frame], keep_mask=keep, confidence=1.0,
                 readout=readout, reject_closer_than_memory=None if held is None else 0.25, skip_cells=held)


@torch.no_grad()
def clip_samples(clip, codec, grid: tuple[int, int], far: float = constants.FAR) -> ClipSamples:
    """Encode a clip and read the memory each target latent frame would see in the world."""
    from mirage_gym.memory import LatentSpatialMemory

    picks = latent_frame_indices(len(clip), codec.frames_per_latent)
    usable = int(picks[-1]) + 1  # whole latent frames: 1 + 4n video frames
    video = torch.as_tensor(clip.frames[:usable]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    raw = codec.vae.encode(video.to(codec.device, codec.vae.dtype)).latent_dist.mode().float()
    latents = ((raw - codec.mean.to(raw.device)[..., None]) / codec.std.to(raw.device)[..., None])[0].transpose(0, 1)
    latents = latents.cpu()
    memory = LatentSpatialMemory(latents.shape[1], far=far, device="cpu")
    height, width = clip.frames.shape[1:3]
    reads = []
    for k, frame in enumerate(picks):
        readout = None
        if k:
            readout = memory.read(clip.poses_c2w[frame], clip.intrinsics[frame], grid, image_size=(height, width))
            reads.append(readout)
        _remember(memory, clip, frame, latents[k], far, readout)
    return ClipSamples(latents, torch.stack([r.features for r in reads]).float(),
                       torch.stack([r.mask for r in reads]).float(), torch.stack([r.depth for r in reads]).float(),
                       torch.as_tensor(clip.poses_c2w[picks]).double())


@torch.no_grad()
def seen_in(clip, frames: list[int], target: int, grid: tuple[int, int], far: float = constants.FAR) -> torch.Tensor:
    """(h, w) bool: the target video frame's latent cells that video ``frames`` show (the part
    of a view that context frames alone could supply)."""
    from mirage_gym.memory import LatentSpatialMemory

    memory = LatentSpatialMemory(1, far=far, device="cpu")
    for frame in sorted(set(frames)):
        _remember(memory, clip, frame, torch.zeros(1, *grid), far)
    image_size = clip.frames.shape[1:3]
    return memory.read(clip.poses_c2w[target], clip.intrinsics[target], grid, image_size=image_size).mask[0] > 0


def load_or_encode(cfg: WanTrainConfig, codec, grid, accelerator, progress: bool) -> list[ClipSamples]:
    """Encoded clips, cached in ``out/cache`` (computed once, by the main process)."""
    from safetensors.torch import load_file, save_file

    from mirage_gym.clips import ClipError, clip_dirs, read_clip

    dirs = clip_dirs(cfg.data)
    vae_config = (Path(cfg.base) / "vae" / "config.json").read_text()  # the latent normalisation is in it
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, str(Path(cfg.base).resolve()), vae_config, cfg.context_frames,
                                     *[(str(d.resolve()), (d / "geometry.npz").stat().st_mtime_ns) for d in dirs]])
                         .encode()).hexdigest()[:16]
    cache = Path(cfg.out) / "cache" / f"clips-{key}.safetensors"
    fields = ("latents", "memory", "mask", "memory_depth", "poses")
    with accelerator.main_process_first():
        if not cache.is_file():
            tensors = {}
            for i, d in enumerate(tqdm(dirs, desc="encoding clips", disable=not progress)):
                clip = read_clip(d)
                if clip.depths is None:
                    raise ClipError(f"clip {d}: training needs depths (memory lifts every frame with depth)")
                if len(clip) < 1 + codec.frames_per_latent:
                    raise ClipError(f"clip {d}: {len(clip)} frames; training needs at least "
                                    f"{1 + codec.frames_per_latent} (two latent frames)")
                if clip.frames.shape[1:3] != tuple(g * codec.downsample for g in grid):
                    raise ClipError(f"clip {d}: frames are {clip.frames.shape[1:3]}, the base needs "
                                    f"{tuple(g * codec.downsample for g in grid)} like the first clip")
                samples = clip_samples(clip, codec, grid)
                tensors.update({f"{i}.{f}": getattr(samples, f).contiguous() for f in fields})
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, cache)
        data = load_file(cache)
    return [ClipSamples(*(data[f"{i}.{f}"] for f in fields)) for i in range(len(dirs))]


def draw_batch(clips: list[ClipSamples], generator: torch.Generator, batch: int, context_frames: int, shift: float,
               detour_prob: float = 0.0, max_detour: int = 0):
    """One batch of (context, noisy target, sigma, target flow, memory inputs).

    A *detour* sample (probability ``detour_prob``) ends its context ``1 .. max_detour``
    latent frames before the target, as when an agent returns to a view after looking
    elsewhere: memory (built from every frame before the target) then shows what the context
    does not, so the add-on is rewarded for using memory rather than only the context."""
    sizes = torch.tensor([len(c.memory) for c in clips])
    picks = torch.multinomial(sizes.float(), batch, replacement=True, generator=generator)
    rows = []
    for c in picks.tolist():
        clip = clips[c]
        k = 1 + int(torch.randint(len(clip.memory), (1,), generator=generator))
        gap = 0
        if detour_prob > 0 and float(torch.rand(1, generator=generator)) < detour_prob and k > 1:
            gap = 1 + int(torch.randint(min(max_detour, k - 1), (1,), generator=generator))
        end = k - gap  # the context is frames end-K .. end-1
        window = context_window(end, context_frames)
        rows.append((clip.latents[window], clip.latents[k], clip.memory[k - 1], clip.mask[k - 1],
                     clip.memory_depth[k - 1], clip.camera(end - 1, k).float()))
    context, x0, memory, mask, memory_depth, camera = (torch.stack(t) for t in zip(*rows))
    u = torch.rand(batch, generator=generator)
    sigma = shift * u / (1 + (shift - 1) * u)
    noise = torch.randn(x0.shape, generator=generator)
    noisy = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
    return context, noisy, sigma, noise - x0, memory, mask, memory_depth, camera


def flow_loss(model, batch, text: torch.Tensor, patch: tuple[int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """MSE of the predicted flow on the target frame (the context frames are out of it)."""
    from mirage_gym.models.generator import control_input

    context, noisy, sigma, target, memory, mask, memory_depth, camera = batch
    frames = context.shape[1]
    per_frame = (noisy.shape[-2] // patch[1]) * (noisy.shape[-1] // patch[2])
    hidden = torch.cat([context.transpose(1, 2), noisy[:, :, None]], 2).to(dtype)
    target_control = control_input(memory, mask, memory_depth, camera)
    control = torch.cat([target_control.new_zeros(*target_control.shape[:2], frames, *target_control.shape[-2:]),
                         target_control], 2).to(dtype)
    timestep = torch.cat([torch.zeros(len(sigma), frames * per_frame, device=sigma.device),
                          (sigma * 1000.0)[:, None].expand(-1, per_frame)], 1)
    flow = model(hidden, timestep, text.expand(len(sigma), -1, -1).to(dtype), control, return_dict=False)[0]
    return F.mse_loss(flow[:, :, -1].float(), target.float())


def trainable(model, stage: str) -> list[torch.nn.Parameter]:
    """Only the stage's parameters learn; everything else is frozen."""
    params = []
    for name, param in model.named_parameters():
        learn = name.startswith(("vace_patch_embedding.", "vace_blocks.")) if stage == "vace" else "lora_" in name
        param.requires_grad_(learn)
        if learn:
            params.append(param)
    return params


def latest_checkpoint(out: Path) -> tuple[Path, dict] | None:
    found = []
    for marker in (out / CHECKPOINTS).glob("*/progress.json"):
        progress = json.loads(marker.read_text())
        found.append((STAGES.index(progress["stage"]), progress["step"], marker.parent, progress))
    if not found:
        return None
    *_, folder, progress = max(found, key=lambda f: f[:2])
    return folder, progress


def train_wan(cfg: WanTrainConfig, progress: bool = True) -> Path:
    """Train and write the add-on to ``cfg.out``; returns that path."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from diffusers import AutoencoderKLWan

    from mirage_gym.models.vace import save_addon
    from mirage_gym.models.video_codec import WanVideoCodec
    from mirage_gym.models.wan import TEXT_TOKENS, _load, read_model_index, transformer_with_addon

    stages = cfg.stages()
    for name in ("max_steps", "batch_size", "checkpoint_every", "context_frames"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise ValueError(f"lr must be positive, got {cfg.lr}")
    if not 0 <= cfg.detour_prob <= 1:
        raise ValueError(f"detour_prob must be in [0, 1], got {cfg.detour_prob}")
    if cfg.detour_prob > 0 and int(cfg.max_detour) < 1:
        raise ValueError(f"max_detour must be at least 1 when detour_prob > 0, got {cfg.max_detour}")
    out = Path(cfg.out)
    # without CUDA, several launched processes train on the CPU over gloo (accelerate's MULTI_CPU)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)  # the fresh add-on's initialisation is part of a seeded run
    base = Path(cfg.base)
    read_model_index(base)
    codec = WanVideoCodec(_load(AutoencoderKLWan, base / "vae").to(accelerator.device).eval())
    lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout}
    model, _ = transformer_with_addon(base, codec.latent_channels, lora=lora, device=accelerator.device)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    patch, dtype = tuple(model.config.patch_size), model.patch_embedding.weight.dtype
    clips = load_or_encode(cfg, codec, _grid_of(cfg.data, codec, patch), accelerator, progress and accelerator.is_main_process)
    text = torch.zeros(1, TEXT_TOKENS, int(model.config.text_dim), device=accelerator.device)
    resume = latest_checkpoint(out) if cfg.resume else None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        if resume is None:
            (out / LOG).unlink(missing_ok=True)
    start_stage = 0 if resume is None else STAGES.index(resume[1]["stage"])
    wrapped = None
    for stage in stages:
        if STAGES.index(stage) < start_stage:
            continue
        optimizer = torch.optim.AdamW(trainable(model, stage), lr=cfg.lr, weight_decay=cfg.weight_decay)
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        first = 0
        if resume is not None and resume[1]["stage"] == stage:
            accelerator.load_state(str(resume[0]))
            first = int(resume[1]["step"])
            if accelerator.is_main_process:
                _truncate_log(out / LOG, stage, first)
        started = time.perf_counter()
        for step in tqdm(range(first, cfg.max_steps), desc=f"train {stage}", disable=not (progress and accelerator.is_main_process)):
            seed = np.random.SeedSequence([cfg.seed, STAGES.index(stage), step, accelerator.process_index])
            generator = torch.Generator().manual_seed(int(seed.generate_state(1)[0]))
            batch = [t.to(accelerator.device) for t in draw_batch(clips, generator, cfg.batch_size, cfg.context_frames,
                                                                 cfg.flow_shift, cfg.detour_prob, cfg.max_detour)]
            with accelerator.autocast():
                loss = flow_loss(wrapped, batch, text, patch, dtype)
            accelerator.backward(loss)
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            mean_loss = accelerator.gather(loss.detach()[None]).mean().item()
            if accelerator.is_main_process:
                with open(out / LOG, "a") as f:
                    f.write(json.dumps({"stage": stage, "step": step + 1, "loss": mean_loss,
                                        "seconds": round(time.perf_counter() - started, 3)}) + "\n")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
                folder = out / CHECKPOINTS / f"{stage}-{step + 1:06d}"
                accelerator.save_state(str(folder))
                if accelerator.is_main_process:
                    (folder / "progress.json").write_text(json.dumps({"stage": stage, "step": step + 1}))
        model = accelerator.unwrap_model(wrapped)
        accelerator.free_memory()  # the next stage prepares (and checkpoints) its own optimizer
        resume = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_addon(model.eval(), out, lora)
    accelerator.end_training()
    return out


def _grid_of(data: str | Path, codec, patch) -> tuple[int, int]:
    """The latent grid of the clips in ``data`` (all clips share the first clip's size)."""
    from mirage_gym.clips import clip_dirs, read_clip

    height, width = read_clip(clip_dirs(data)[0]).frames.shape[1:3]
    multiple = codec.downsample * patch[1]
    if height % multiple or width % multiple:
        raise ValueError(f"clip frames {height}x{width} must be multiples of {multiple} for this base")
    return height // codec.downsample, width // codec.downsample


def _truncate_log(log: Path, stage: str, step: int) -> None:
    """Drop log lines past the checkpoint a run resumes from (they will be written again)."""
    if not log.is_file():
        return
    keep = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if STAGES.index(entry["stage"]) < STAGES.index(stage) or (entry["stage"] == stage and entry["step"] <= step):
            keep.append(line)
    log.write_text("".join(f"{line}\n" for line in keep))


@torch.no_grad()
def evaluate_addon(base: str | Path, data: str | Path, addon: str | Path | None = None, sampler_steps: int = 20,
                   seed: int = 0, hide_memory: bool = False, detour: int = 0, progress: bool = True) -> dict:
    """Held-out latent prediction, shaped like env steps: every target latent frame of the
    clips in ``data`` is sampled (hold-memory off, so the figure is what the generator does
    with memory, not the exact copy) and compared with the clip's true latent.

    Errors are split by cell: ``covered`` (memory holds the cell), ``uncovered``, and
    ``memory_only`` (memory holds it but the context frames do not show it: the cells where
    only memory can help). ``detour``: the context ends that many latent frames before each
    target (targets too early for it are skipped), as after looking elsewhere. ``addon=None``:
    the zero add-on (the base); ``hide_memory``: the generator is shown no memory (the
    ablation). ``mse_copy_covered`` is memory's own error on the covered cells, for reference."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler

    from mirage_gym.clips import clip_dirs, read_clip
    from mirage_gym.models.video_codec import WanVideoCodec
    from mirage_gym.models.wan import WanWorldModel, _load, transformer_with_addon

    base = Path(base)
    vae = _load(AutoencoderKLWan, base / "vae")
    codec = WanVideoCodec(vae.eval())
    model, _ = transformer_with_addon(base, codec.latent_channels, addon)
    scheduler = _load(UniPCMultistepScheduler, base / "scheduler")
    world_model = WanWorldModel(model, vae, scheduler.config, depth=None, sampler_steps=sampler_steps,
                                hold_memory=False)
    dirs = clip_dirs(data)
    grid = _grid_of(data, codec, tuple(model.config.patch_size))
    generator = torch.Generator().manual_seed(seed)
    errors = {"covered": [], "uncovered": [], "memory_only": [], "copy_covered": []}
    for d in tqdm(dirs, desc="evaluating", disable=not progress):
        clip = read_clip(d)
        samples = clip_samples(clip, codec, grid)
        picks = latent_frame_indices(len(clip), codec.frames_per_latent)
        for k in range(1 + detour, len(samples.latents)):
            end = k - detour
            window = context_window(end, world_model.context_frames)
            noise = torch.randn(samples.latents[k].shape, generator=generator)[None]
            memory, mask, depth = samples.memory[k - 1], samples.mask[k - 1], samples.memory_depth[k - 1]
            shown = (torch.zeros_like(memory), torch.zeros_like(mask), torch.full_like(depth, float("inf"))) \
                if hide_memory else (memory, mask, depth)
            out = world_model.generate(samples.latents[window][None], *(t[None] for t in shown),
                                       samples.camera(end - 1, k).float()[None], noise)[0]
            squared = (out - samples.latents[k]).pow(2).mean(0)
            covered = mask[0] > 0
            memory_only = covered & ~seen_in(clip, [int(picks[j]) for j in window], int(picks[k]), grid)
            errors["covered"].append(squared[covered])
            errors["uncovered"].append(squared[~covered])
            errors["memory_only"].append(squared[memory_only])
            errors["copy_covered"].append((memory - samples.latents[k]).pow(2).mean(0)[covered])
    result = {"clips": len(dirs), "addon": None if addon is None else str(addon), "memory_hidden": hide_memory,
              "detour": detour}
    for name, parts in errors.items():
        values = torch.cat(parts)
        result[f"mse_{name}"] = float(values.mean()) if values.numel() else float("nan")
        result[f"cells_{name}"] = int(values.numel())
    return result
