"""The embedded world model: codec, generator, sampler, loading, and what it must do."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny

from mirage_gym.evaluation import HELD_OUT_SEED, LOOPS, run_episode
from mirage_gym.geometry import Action
from mirage_gym.metrics import psnr
from mirage_gym.models import LatentWorldModel, ModelLoadError, load_backend, shipped_model_path
from mirage_gym.models.codec import (
    RGBDCodec,
    code_to_depth,
    depth_to_code,
    fit_patch_embedding,
    new_codec,
    tiny_codec_config,
)
from mirage_gym.models.generator import control_input
from mirage_gym.models.sampler import FlowMatchEulerSampler
from mirage_gym.scenes import make_scene
from mirage_gym.training.generator import new_generator
from mirage_gym.world import World, WorldConfig


@pytest.fixture(scope="module")
def model():
    return load_backend("tiny")


def test_depth_code_round_trip_and_sky():
    depth = torch.tensor([0.1, 0.5, 3.0, 49.0, math.inf])
    code, sky = depth_to_code(depth)
    assert sky.tolist() == [False, False, False, False, True]
    back = code_to_depth(code, torch.where(sky, 1.0, -1.0))
    torch.testing.assert_close(back[:4], depth[:4], rtol=1e-5, atol=0)
    assert math.isinf(back[4])


def test_sampler_lands_on_a_perfect_prediction():
    sampler = FlowMatchEulerSampler(steps=3, shift=2.0)
    sigmas = sampler.sigmas()
    assert sigmas[0] == 1 and sigmas[-1] == 0 and torch.all(sigmas[1:] < sigmas[:-1])
    target = torch.randn(2, 4, 8, 8)
    seen = []

    def predict(x, sigma):
        seen.append(sigma)
        return target

    torch.testing.assert_close(sampler.sample(predict, torch.randn_like(target)), target)
    assert len(seen) == 3
    with pytest.raises(ValueError, match="steps"):
        FlowMatchEulerSampler(steps=0)


def test_sampler_holds_known_cells_and_fills_the_rest():
    sampler = FlowMatchEulerSampler(steps=3)
    known = torch.randn(2, 4, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    guess = torch.randn_like(known)
    out = sampler.sample(lambda x, sigma: guess, torch.randn_like(known), known=known, known_mask=mask)
    torch.testing.assert_close(out, torch.where(mask > 0, known, guess))


def test_codec_starts_as_the_linear_patch_code_of_its_data():
    frames = [make_scene(HELD_OUT_SEED + i).render(np.eye(4), 64, 64) for i in range(4)]
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames])).permute(0, 3, 1, 2).float() / 255
    depth = torch.from_numpy(np.stack([f.depth for f in frames]))[:, None]
    codec = new_codec(width=8, blocks=1)
    assert codec.downsample == 4
    fit_patch_embedding(codec, rgb, depth)
    with torch.no_grad():
        z = codec.encode(rgb, depth)
        assert z.shape == (4, 16, 16, 16)
        out, decoded_depth = codec.decode(z)
    assert out.shape == (4, 3, 64, 64) and decoded_depth.shape == (4, 1, 64, 64)
    for a, b in zip(out, rgb):
        assert psnr(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()) > 30
    assert (torch.isinf(decoded_depth) == torch.isinf(depth)).float().mean() > 0.98  # sky where the scene has sky
    solid = torch.isfinite(depth)
    assert ((decoded_depth[solid] - depth[solid]).abs() / depth[solid]).median() < 0.05
    with pytest.raises(ValueError, match="patch_size"):
        RGBDCodec(AutoencoderTiny(**tiny_codec_config(width=8, patch_size=4)), 2)


def test_a_fresh_generator_copies_memory_exactly():
    generator = new_generator(16)
    memory = torch.randn(2, 16, 16, 16)
    mask = (torch.rand(2, 1, 16, 16) > 0.4).float()
    depth = torch.where(mask > 0, 2.0, math.inf).expand_as(mask)
    out = generator.predict_x0(torch.randn_like(memory), torch.rand(2), torch.randn_like(memory), memory, mask, depth,
                               torch.eye(4).expand(2, 4, 4))
    torch.testing.assert_close(out, memory * mask)
    control = control_input(memory, mask, depth, torch.eye(4).expand(2, 4, 4))
    assert control.shape == (2, 21, 1, 16, 16)
    assert generator.transformer.config.vace_in_channels == 21


def test_lean_kernels_compute_what_diffusers_blocks_compute():
    """The generator's attention and GELU forms agree with diffusers' own, with and
    without gradients, and leave the state dict's names as they were."""
    from diffusers import WanVACETransformer3DModel

    from mirage_gym.models.generator import tiny_transformer_config
    from mirage_gym.models.kernels import RotaryAttnProcessor, use_lean_kernels

    torch.manual_seed(0)
    reference = WanVACETransformer3DModel(**tiny_transformer_config()).eval()
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.2)  # a random network: the output projections are not zero
    lean = WanVACETransformer3DModel(**tiny_transformer_config()).eval()
    lean.load_state_dict(reference.state_dict())
    use_lean_kernels(lean)
    assert lean.state_dict().keys() == reference.state_dict().keys()
    inputs = dict(hidden_states=torch.randn(3, 32, 1, 16, 16), timestep=torch.tensor([100.0, 500.0, 900.0]),
                  encoder_hidden_states=torch.randn(3, 4, 32), control_hidden_states=torch.randn(3, 21, 1, 16, 16),
                  return_dict=False)
    with torch.no_grad():
        expected = reference(**inputs)[0]
        assert expected.abs().mean() > 0.1
        torch.testing.assert_close(lean(**inputs)[0], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lean(**inputs)[0], reference(**inputs)[0], rtol=1e-4, atol=1e-5)  # training path
    attention = next(m for m in lean.modules() if isinstance(getattr(m, "processor", None), RotaryAttnProcessor))
    attention.fuse_projections()
    with pytest.raises(ValueError, match="unfused projections"):
        attention(torch.randn(1, 4, attention.inner_dim))


def test_shipped_weights_are_small_safetensors():
    path = shipped_model_path()
    files = [p for p in path.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".ckpt") for p in files)


def test_shipped_model_generates_a_real_frame(model):
    scene = make_scene(HELD_OUT_SEED)
    world = World(model, WorldConfig())
    r = scene.render(np.eye(4), 64, 64)
    world.reset(0, r.rgb, r.depth, seed=0)
    from mirage_gym.geometry import Action, discrete_to_continuous, pose_from_state

    frame = world.step(discrete_to_continuous(Action.TURN_RIGHT)[None])
    assert frame.rgb.shape == (1, 64, 64, 3) and frame.rgb.dtype == np.uint8
    assert frame.rgb.std() > 10  # not a flat or empty image
    truth = scene.render(pose_from_state(np.array([0, 0, 0, math.radians(15), 0, 0])), 64, 64)
    assert psnr(frame.rgb[0], truth.rgb) > 17  # a world model: noise or a flat grey frame score about 10-13
    finite = np.isfinite(frame.depth[0]) & np.isfinite(truth.depth)
    rel = np.abs(frame.depth[0][finite] - truth.depth[finite]) / truth.depth[finite]
    assert np.median(rel) < 0.2


def test_same_seed_same_frames(model):
    actions = LOOPS["revisit_generated"][0][:8]
    a = run_episode(model, [HELD_OUT_SEED + 1], actions, WorldConfig(), seed=5)
    b = run_episode(model, [HELD_OUT_SEED + 1], actions, WorldConfig(), seed=5)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    c = run_episode(model, [HELD_OUT_SEED + 1], actions, WorldConfig(), seed=6)
    assert not np.array_equal(a.rgb, c.rgb)  # the noise really comes from the seed


def test_memory_reproduces_a_seen_view_better_than_no_memory(model):
    actions, pairs = LOOPS["turn_360"]
    seeds = [HELD_OUT_SEED + 2, HELD_OUT_SEED + 3]
    scores = {}
    for use_memory in (True, False):
        ep = run_episode(model, seeds, actions, WorldConfig(use_memory=use_memory), seed=0)
        (a, b), = pairs
        scores[use_memory] = np.mean([psnr(ep.rgb[b, i], ep.rgb[a, i]) for i in range(len(seeds))])
    assert scores[True] > 25  # the quality bar of loop (a), one indoor and one outdoor scene
    assert scores[True] > scores[False] + 6


def test_truth_fill_is_a_ceiling_for_the_trained_generator(model):
    """The quality benchmark's perfect generator: through half a turn, into views the seed
    never showed, every frame stays close to the true scene; the trained generator's
    inventions drift away from it."""
    actions = LOOPS["turn_360"][0][:12]
    seeds = [HELD_OUT_SEED + 2, HELD_OUT_SEED + 3]
    runs = {fill: run_episode(model, seeds, actions, WorldConfig(), truth_fill=fill) for fill in (True, False)}
    scores = {fill: np.array([[psnr(ep.rgb[t, i], ep.true_rgb[t, i]) for i in range(len(seeds))]
                              for t in range(1, len(actions) + 1)]).mean(axis=1) for fill, ep in runs.items()}
    assert scores[True].min() > 22
    assert scores[True][-1] > scores[False][-1] + 6


def test_remembered_content_drawn_where_it_lands_is_closer_to_the_truth(model, monkeypatch):
    """Three steps forward: memory cells land off their cells' centres as the view magnifies;
    moving the decoded frame to where they land beats drawing them at the centres."""
    import mirage_gym.world

    seeds = [HELD_OUT_SEED + 2, HELD_OUT_SEED + 3]
    actions = [Action.MOVE_FORWARD] * 3
    scores = {}
    for placed in (True, False):
        if not placed:
            monkeypatch.setattr(mirage_gym.world, "place_at_landings", lambda rgb, depth, offset: (rgb, depth))
        ep = run_episode(model, seeds, actions, WorldConfig())
        scores[placed] = np.mean([psnr(ep.rgb[t, i], ep.true_rgb[t, i]) for t in range(1, 4) for i in range(2)])
    assert scores[True] > scores[False] + 1.5, scores


def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    again = LatentWorldModel.from_pretrained(tmp_path / "m")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 16, 16, 16)
    mask = torch.ones(1, 1, 16, 16)
    args = (x[:, None], x, mask, torch.full_like(mask, 3.0), torch.eye(4)[None], torch.randn_like(x))
    assert torch.equal(model.generate(*args), again.generate(*args))
    for name in ("codec/config.json", "transformer/config.json"):  # configs as shipped: no local path recorded
        assert (tmp_path / "m" / name).read_text() == (shipped_model_path() / name).read_text()


def test_missing_or_corrupt_weights_raise_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no model at .*not a directory"):
        load_backend(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="mirage_model.json is missing"):
        load_backend(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(shipped_model_path(), broken)
    weights = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="does not match its sha256"):
        load_backend(broken)
    manifest = broken / "mirage_model.json"
    unhashed = json.loads(manifest.read_text())
    del unhashed["files"]  # a model directory from before hashes were recorded
    manifest.write_text(json.dumps(unhashed))
    with pytest.raises(ModelLoadError, match="could not load the model"):
        load_backend(broken)
    weights.unlink()
    with pytest.raises(ModelLoadError, match=str(weights).replace("\\", "\\\\")):
        load_backend(broken)
    manifest.write_text(json.dumps(dict(json.loads(manifest.read_text()), format_version=99)))
    with pytest.raises(ModelLoadError, match="format_version"):
        load_backend(broken)
