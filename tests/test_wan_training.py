"""Training the Mirage add-on on a tiny random Wan2.2 base, on exported procedural clips."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mirage_gym  # noqa: F401
from mirage_gym.cli import main as cli
from mirage_gym.clips import Clip, ClipError, read_clip, write_clip
from mirage_gym.geometry import Action
from mirage_gym.models.depth import save_random_depth_anything
from mirage_gym.models.generator import CONTROL_EXTRA
from mirage_gym.models.vace import addon_from_base, attach_lora
from mirage_gym.models.video_codec import WanVideoCodec
from mirage_gym.models.wan import TINY_TRANSFORMER, save_random_wan
from mirage_gym.training.wan import ClipSamples, WanTrainConfig, clip_samples, draw_batch, flow_loss, trainable, train_wan


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_training")
    save_random_wan(root / "base")
    save_random_depth_anything(root / "depth")
    assert cli(["export-clips", "--out", str(root / "clips"), "--clips", "3", "--frames", "9"]) in (0, None)
    return root


def base_parts(root):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    transformer = WanTransformer3DModel.from_pretrained(root / "base" / "transformer")
    codec = WanVideoCodec(AutoencoderKLWan.from_pretrained(root / "base" / "vae").eval())
    model = addon_from_base(transformer, codec.latent_channels + CONTROL_EXTRA)
    attach_lora(model)
    return model, codec


def test_exported_clips_read_back_and_bad_clips_are_refused(setup, tmp_path):
    clip = read_clip(setup / "clips" / "clip_00000")
    assert clip.frames.shape == (9, 64, 64, 3) and clip.poses_c2w.shape == (9, 4, 4)
    assert clip.intrinsics.shape == (9, 3, 3) and clip.depths.shape == (9, 64, 64) and clip.masks.dtype == bool
    np.testing.assert_allclose(clip.poses_c2w[0], np.eye(4), atol=1e-12)

    def broken(name, **changes):
        path = tmp_path / name
        shutil.copytree(setup / "clips" / "clip_00000", path)
        geometry = dict(np.load(path / "geometry.npz"))
        geometry.update(changes)
        np.savez(path / "geometry.npz", **{k: v for k, v in geometry.items() if v is not None})
        return path

    with pytest.raises(ClipError, match="poses_c2w must be finite"):
        read_clip(broken("poses", poses_c2w=np.eye(4)[None].repeat(8, 0)))
    depths = clip.depths.copy()
    depths[2, 3, 4] = np.nan
    with pytest.raises(ClipError, match=r"bad_depth: depths must be .* 1 NaN"):
        read_clip(broken("bad_depth", depths=depths))
    with pytest.raises(ClipError, match="masks must be"):
        read_clip(broken("masks", masks=clip.masks.astype(np.float32)))
    with pytest.raises(ClipError, match="'poses_c2w' and 'intrinsics'"):
        read_clip(broken("no_k", intrinsics=None))
    single_k = read_clip(broken("one_k", intrinsics=clip.intrinsics[0]))  # one (3, 3) for every frame
    np.testing.assert_array_equal(single_k.intrinsics, clip.intrinsics)
    missing = broken("frames")
    shutil.rmtree(missing / "frames")
    with pytest.raises(ClipError, match="neither frames/ nor frames.mp4"):
        read_clip(missing)
    (broken("json") / "clip.json").write_text("[")
    with pytest.raises(ClipError, match="json.*not valid JSON"):
        read_clip(tmp_path / "json")
    with pytest.raises(ClipError, match="geometry.npz is missing"):
        read_clip(tmp_path)
    mp4 = tmp_path / "mp4"
    write_clip(mp4, Clip(clip.frames, clip.poses_c2w, clip.intrinsics))
    import imageio.v3 as iio

    iio.imwrite(mp4 / "frames.mp4", clip.frames, fps=8)
    shutil.rmtree(mp4 / "frames")
    assert read_clip(mp4).frames.shape == clip.frames.shape


def test_memory_of_a_sample_comes_from_the_clips_earlier_frames(setup):
    _, codec = base_parts(setup)
    clip = read_clip(setup / "clips" / "clip_00001")
    samples = clip_samples(clip, codec, (4, 4))
    assert samples.latents.shape == (3, 48, 4, 4) and samples.memory.shape == (2, 48, 4, 4)
    # every target's camera is its last video frame's pose relative to the previous latent frame's
    expected = np.linalg.inv(clip.poses_c2w[0]) @ clip.poses_c2w[4]
    np.testing.assert_allclose(samples.camera(0, 1).numpy(), expected, atol=1e-5)
    covered = samples.mask[:, 0] > 0
    assert covered.any()
    # remembered cells hold latents written from the clip (float16 copies)
    flat = samples.latents[:2].permute(0, 2, 3, 1).reshape(-1, 48)
    for cell in samples.memory.permute(0, 2, 3, 1)[covered]:
        assert torch.isclose(flat, cell, atol=2e-2, rtol=1e-2).all(dim=1).any()


def labelled_clip(frames: int = 7) -> ClipSamples:
    """Latent frame k filled with the value k, and distinct poses, so a batch names its frames."""
    latents = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(frames, 2, 2, 2).clone()
    poses = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
    poses[:, 0, 3] = torch.arange(frames) * 0.2
    empty = torch.zeros(frames - 1, 1, 2, 2)
    return ClipSamples(latents, latents[1:].clone(), empty + 1, empty + 3.0, poses)


@pytest.mark.parametrize("detour_prob", [0.0, 1.0])
def test_detour_samples_end_their_context_before_the_target(detour_prob):
    gaps = set()
    for seed in range(40):
        context, noisy, sigma, flow, memory, _, _, camera = draw_batch(
            [labelled_clip()], torch.Generator().manual_seed(seed), 4, 2, 5.0, detour_prob, 3)
        x0 = noisy - sigma.view(-1, 1, 1, 1) * flow  # noisy = x0 + sigma * (noise - x0)
        for row in range(4):
            k, last = round(float(x0[row].mean())), int(context[row, -1, 0, 0, 0])
            assert float(memory[row].mean()) == k  # memory is always read at the target
            gap = k - 1 - last
            gaps.add(gap)
            assert 0 <= gap <= 3 and last >= 0
            assert gap == 0 if detour_prob == 0 or k == 1 else gap >= 1  # the first target has no room for one
            assert context[row, 0, 0, 0, 0] == max(0, last - 1)
            assert torch.allclose(camera[row, 0, 3], torch.tensor((k - last) * 0.2))  # target in the last context frame
    assert gaps == ({0} if detour_prob == 0 else {0, 1, 2, 3})


def test_bad_detour_arguments_are_refused(setup, tmp_path):
    for kwargs, message in ((dict(detour_prob=1.5), "detour_prob"), (dict(detour_prob=0.5, max_detour=0), "max_detour")):
        cfg = WanTrainConfig(base=str(setup / "base"), data=str(setup / "clips"), out=str(tmp_path / "x"), **kwargs)
        with pytest.raises(ValueError, match=message):
            train_wan(cfg, progress=False)
    assert not (tmp_path / "x").exists()


def test_a_training_step_changes_only_the_stage_weights(setup):
    model, codec = base_parts(setup)
    samples = [clip_samples(read_clip(setup / "clips" / f"clip_{i:05d}"), codec, (4, 4)) for i in range(3)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    text = torch.zeros(1, 512, 32)
    for stage, prefix in (("vace", "vace_"), ("lora", None)):
        params = trainable(model, stage)
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        batch = draw_batch(samples, torch.Generator().manual_seed(0), 2, 2, 5.0)
        flow_loss(model, batch, text, (1, 2, 2), torch.float32).backward()
        optimizer.step()
        after = model.state_dict()
        changed = {k for k in after if not torch.equal(after[k], before[k])}
        learns = (lambda k: k.startswith(prefix)) if prefix else (lambda k: "lora_" in k)
        assert changed and all(learns(k) for k in changed), sorted(changed)[:5]
        before = {k: v.clone() for k, v in after.items()}


def test_overfits_one_fixed_sample(setup):
    """Wrong targets, masks or frame layout would keep the loss up. The base is 192 wide: its
    frozen output projection maps each token to 192 values (48 channels x 2 x 2), which a
    narrower base cannot fit for an arbitrary target."""
    from diffusers import WanTransformer3DModel

    _, codec = base_parts(setup)
    torch.manual_seed(0)
    base = WanTransformer3DModel(**dict(TINY_TRANSFORMER, num_attention_heads=4, attention_head_dim=48, ffn_dim=192))
    model = addon_from_base(base, codec.latent_channels + CONTROL_EXTRA)
    attach_lora(model)
    samples = [clip_samples(read_clip(setup / "clips" / "clip_00002"), codec, (4, 4))]
    batch = draw_batch(samples, torch.Generator().manual_seed(3), 1, 2, 5.0)  # fixed noise and timestep
    text = torch.zeros(1, 512, 32)
    optimizer = torch.optim.AdamW(trainable(model, "vace"), lr=1e-3)
    losses = []
    for _ in range(40):
        loss = flow_loss(model, batch, text, (1, 2, 2), torch.float32)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_train_then_resume_is_exact_and_the_addon_changes_the_world(setup, tmp_path):
    common = ["train", "wan", "--base", str(setup / "base"), "--data", str(setup / "clips"), "--stage", "both"]
    cli([*common, "--out", str(tmp_path / "straight"), "--max-steps", "4", "--checkpoint-every", "2"])
    cli([*common, "--out", str(tmp_path / "resumed"), "--max-steps", "4", "--checkpoint-every", "2"])
    # cut the second run back to its first checkpoint, as if it had been killed there
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "lora-000004")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "lora-000002")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "vace-000004")
    cli([*common, "--out", str(tmp_path / "resumed"), "--max-steps", "4", "--checkpoint-every", "2", "--resume"])
    for name in ("vace.safetensors", "lora/adapter_model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["step"]) for e in log] == [("vace", i) for i in range(1, 5)] + [("lora", i) for i in range(1, 5)]
    resumed = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in resumed] == [e["loss"] for e in log]
    vace = load_file(tmp_path / "straight" / "vace.safetensors")
    assert vace["vace_blocks.0.proj_out.weight"].abs().sum() > 0  # no longer the zero add-on

    def frames(addon):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="no Mirage add-on")
            env = gym.make("MirageWorld-v0", model=str(setup / "base"), depth_model=str(setup / "depth"), addon=addon)
        env.reset(seed=0)
        return np.stack([env.step(int(Action.TURN_LEFT))[0] for _ in range(2)])

    assert not np.array_equal(frames(str(tmp_path / "straight")), frames(None))


def test_two_process_accelerate_launch_trains_an_addon(setup, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "mirage_gym.cli",
               "train", "wan", "--base", str(setup / "base"), "--data", str(setup / "clips"), "--out",
               str(tmp_path / "addon"), "--stage", "vace", "--max-steps", "2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = tmp_path / "addon" / "checkpoints" / "vace-000002"
    assert (state / "random_states_0.pkl").is_file() and (state / "random_states_1.pkl").is_file()  # two ranks
    assert (tmp_path / "addon" / "mirage_addon.json").is_file()
    log = (tmp_path / "addon" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2  # one writer
