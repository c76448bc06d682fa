"""The Wan2.2 backbone with the Mirage add-on, on tiny random builds of the real classes."""

import json
import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import mirage_gym  # noqa: F401
from mirage_gym.geometry import Action
from mirage_gym.models import ModelLoadError
from mirage_gym.models.depth import save_random_depth_anything
from mirage_gym.models.vace import addon_from_base, attach_lora, save_addon
from mirage_gym.models.wan import TINY_TRANSFORMER, WanWorldModel, save_random_wan

TURNS = [Action.TURN_LEFT] * 3 + [Action.TURN_RIGHT] * 3


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return {
        "wan": save_random_wan(root / "wan"),
        "wan_text": save_random_wan(root / "wan_text", text_encoder=True),
        "depth": save_random_depth_anything(root / "depth"),
        "root": root,
    }


def make(dirs, model="wan", **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no Mirage add-on")
        return gym.make("MirageWorld-v0", model=str(dirs[model]), depth_model=str(dirs["depth"]), **kwargs)


def rollout(env, actions, seed=3, **options):
    obs, _ = env.reset(seed=seed, options=options or None)
    frames = [obs]
    for a in actions:
        frames.append(env.step(int(a))[0])
    return np.stack(frames)


def test_zero_addon_is_exactly_the_base_transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    base = WanTransformer3DModel(**TINY_TRANSFORMER).eval()
    x, text = torch.randn(2, 48, 3, 4, 4), torch.randn(2, 9, 32)
    per_token = torch.zeros(2, 12)
    per_token[:, -4:] = 640.0  # clean context frames, a noisy last frame
    with torch.no_grad():
        expected = [base(x, t, text, return_dict=False)[0] for t in (per_token, torch.tensor([640.0, 90.0]))]
    model = addon_from_base(base, vace_in_channels=53)
    attach_lora(model)
    assert model.config.vace_layers == [0]  # every second layer of 2
    control = torch.randn(2, 53, 3, 4, 4)
    with torch.no_grad():
        got = [model(x, t, text, control, return_dict=False)[0] for t in (per_token, torch.tensor([640.0, 90.0]))]
    for e, g in zip(expected, got):
        assert torch.equal(e, g)
    with pytest.raises(ValueError, match="control_hidden_states must cover"):
        model(x, per_token, text, control[:, :, :2])


def test_twenty_steps_deterministic_and_streamed(dirs):
    with pytest.warns(UserWarning, match="no Mirage add-on"):
        gym.make("MirageWorld-v0", model=str(dirs["wan"]), depth_model=str(dirs["depth"]))
    env = make(dirs)
    actions = np.random.default_rng(0).integers(0, 9, 20)
    first = rollout(env, actions)
    assert first.shape == (21, 64, 64, 3) and first.dtype == np.uint8
    assert env.unwrapped.step_frames.shape == (4, 64, 64, 3)  # one latent frame = 4 video frames
    np.testing.assert_array_equal(env.unwrapped.step_frames[-1], first[-1])
    np.testing.assert_array_equal(rollout(make(dirs), actions), first)
    assert not np.array_equal(rollout(make(dirs), actions, seed=4), first)


def test_held_memory_cells_equal_the_stored_latents_on_a_revisit(dirs):
    env = make(dirs)
    backend = env.unwrapped.world.backend
    seen = []
    generate = backend.generate

    def recording(context, memory, mask, *args, **kwargs):
        out = generate(context, memory, mask, *args, **kwargs)
        seen.append((memory.clone(), mask.clone(), out.clone()))
        return out

    backend.generate = recording
    try:
        env.reset(seed=1)
        seed_latent = env.unwrapped.world.context[0, -1].clone()
        for a in TURNS:
            env.step(int(a))
    finally:
        backend.generate = generate
    memory, mask, out = seen[-1]  # back at the start pose
    held = mask[0, 0] > 0
    assert held.float().mean() > 0.5
    assert torch.equal(out[0][:, held], memory[0][:, held])
    # memory stores float16 latents: the revisit shows the seed's own latents, except where
    # a point generated during the turn landed in front of the seed's
    same = ((out[0] - seed_latent).abs() <= 2e-2 + 1e-2 * seed_latent.abs()).all(dim=0)
    assert same[held].float().mean() >= 0.75


def test_snapshot_continues_identically(dirs, tmp_path):
    env = make(dirs)
    rollout(env, [Action.MOVE_FORWARD, Action.TURN_LEFT])
    env.unwrapped.save_snapshot(tmp_path / "w.snap")
    later = [env.step(int(a))[0] for a in (Action.TURN_LEFT, Action.STRAFE_RIGHT)]
    frames = env.unwrapped.step_frames
    other = make(dirs)
    other.reset(seed=9)
    other.unwrapped.load_snapshot(tmp_path / "w.snap")
    again = [other.step(int(a))[0] for a in (Action.TURN_LEFT, Action.STRAFE_RIGHT)]
    np.testing.assert_array_equal(np.stack(later), np.stack(again))
    np.testing.assert_array_equal(frames, other.unwrapped.step_frames)
    # a decoder stream that lost a tensor is refused, and the env is left as it was
    from mirage_gym import snapshot

    tensors, meta = snapshot.load_snapshot(tmp_path / "w.snap")
    dropped = sorted(k for k in tensors if k.startswith("stream."))[0]
    snapshot.save_snapshot(tmp_path / "bad.snap", {k: v for k, v in tensors.items() if k != dropped}, meta)
    with pytest.raises(snapshot.SnapshotError, match="decode stream tensors"):
        other.unwrapped.load_snapshot(tmp_path / "bad.snap")
    np.testing.assert_array_equal(frames, other.unwrapped.step_frames)


def test_vector_env_batches_wan_worlds(dirs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no Mirage add-on")
        vec = gym.make_vec("MirageWorld-v0", num_envs=2, vectorization_mode="vector_entry_point",
                           model=str(dirs["wan"]), depth_model=str(dirs["depth"]))
    single = make(dirs)
    obs, _ = vec.reset(seed=5)
    single_obs, _ = single.reset(seed=6)
    np.testing.assert_array_equal(obs[1], single_obs)
    for a in (Action.TURN_LEFT, Action.MOVE_FORWARD):
        obs = vec.step(np.array([int(a), int(a)]))[0]
        single_obs = single.step(int(a))[0]
        np.testing.assert_allclose(obs[1].astype(int), single_obs.astype(int), atol=2)


def test_prompt_conditions_the_world(dirs):
    env = make(dirs, model="wan_text")
    plain = rollout(env, TURNS[:2])
    prompted = rollout(env, TURNS[:2], prompt="a bright red room")
    assert not np.array_equal(plain[1:], prompted[1:])
    np.testing.assert_array_equal(rollout(env, TURNS[:2], prompt="a bright red room"), prompted)
    with pytest.raises(ValueError, match="takes no text .*needs text_encoder"):
        make(dirs).reset(options={"prompt": "a room"})
    with pytest.raises(ValueError, match="takes no text"):
        gym.make("MirageWorld-v0").reset(options={"prompt": "a room"})


def test_addon_round_trip_changes_the_world(dirs, tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no Mirage add-on")
        model = WanWorldModel.from_pretrained(dirs["wan"], depth_model=dirs["depth"])
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if "lora_B" in name or "vace_blocks.0.proj_out" in name:
                p.normal_(std=0.05)
    save_addon(model.transformer, tmp_path / "addon", lora={"r": 32, "alpha": 32, "dropout": 0.05})
    loaded = WanWorldModel.from_pretrained(dirs["wan"], addon=tmp_path / "addon", depth_model=dirs["depth"])
    mine, theirs = model.transformer.state_dict(), loaded.transformer.state_dict()
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    trained = rollout(gym.make("MirageWorld-v0", model=str(dirs["wan"]), addon=str(tmp_path / "addon"),
                               depth_model=str(dirs["depth"])), TURNS[:2])
    assert not np.array_equal(trained[1:], rollout(make(dirs), TURNS[:2])[1:])


def test_bad_directories_are_refused(dirs, tmp_path):
    from mirage_gym.models import load_backend

    with pytest.raises(ModelLoadError, match="needs depth_model"):
        load_backend(dirs["wan"])
    broken = tmp_path / "broken"
    shutil.copytree(dirs["wan"], broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps(dict(index, transformer=["diffusers", "FluxTransformer2DModel"])))
    with pytest.raises(ModelLoadError, match="'transformer' must be WanTransformer3DModel"):
        load_backend(broken, depth_model=dirs["depth"])
    (broken / "model_index.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="JSON object"):
        load_backend(broken, depth_model=dirs["depth"])
    (broken / "model_index.json").write_text(json.dumps(index))
    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="could not load AutoencoderKLWan from .*vae"):
        load_backend(broken, depth_model=dirs["depth"])
    with pytest.raises(ModelLoadError, match="no depth model at"):
        load_backend(dirs["wan"], depth_model=tmp_path)
    relative = tmp_path / "relative"
    save_random_depth_anything(relative)
    config = json.loads((relative / "config.json").read_text())
    (relative / "config.json").write_text(json.dumps(dict(config, depth_estimation_type="relative")))
    with pytest.raises(ModelLoadError, match="relative depth"):
        load_backend(dirs["wan"], depth_model=relative)
    with pytest.raises(ModelLoadError, match="no Mirage add-on at"):
        load_backend(dirs["wan"], depth_model=dirs["depth"], addon=tmp_path)
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_backend(dirs["wan"], depth_model=dirs["depth"], dtype="int8")
    with pytest.raises(ValueError, match="multiples of 32"):
        make(dirs, width=80, height=64)


def test_bfloat16_runs_on_cpu(dirs):
    env = make(dirs, dtype="bfloat16")
    frames = rollout(env, TURNS[:2])
    assert env.unwrapped.world.backend.dtype == torch.bfloat16
    assert frames.shape == (3, 64, 64, 3)


def test_quick_benchmark_reports_every_figure(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import wan as bench

    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--json", str(tmp_path / "wan.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "wan.json").read_text()) == result
    assert result["late_step"] == 50 and result["early_step"] == 10
    for key in ("seconds_per_step", "seconds_per_step_no_memory", "seconds_per_step_late", "late_over_early"):
        assert np.isfinite(result[key]) and result[key] > 0
    assert result["seconds_per_video_frame"] == pytest.approx(result["seconds_per_step"] / 4)
    assert result["memory_points_late"] > 0 and result["memory_cache_bytes_late"] > 0
