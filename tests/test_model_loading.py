"""Model loading: every broken model directory or model argument is a ModelLoadError that
names the path (or the argument); weights are checked against the manifest's SHA-256;
first loads from several threads at once succeed."""

import json
import shutil
import subprocess
import sys

import gymnasium as gym
import pytest

import mirage_gym  # noqa: F401
from mirage_gym.models import ModelLoadError, load_backend, shipped_model_path
from mirage_gym.models.backend import MANIFEST, file_sha256


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    shutil.copytree(shipped_model_path(), path)
    return path


def edit_manifest(path, edit):
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps(edit(manifest)))


@pytest.mark.parametrize("model", [None, 42, object()])
def test_a_model_that_is_neither_a_name_a_directory_nor_a_backend_is_refused(model):
    with pytest.raises(ModelLoadError, match="model must be 'tiny', a local model directory"):
        gym.make("MirageWorld-v0", model=model)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: [m], "must hold a JSON object, got a list"),
        (lambda m: {k: v for k, v in m.items() if k != "sampler"}, "sampler.steps must be a positive int, got missing"),
        (lambda m: dict(m, sampler=dict(m["sampler"], steps=0)), "sampler.steps must be a positive int, got 0"),
        (lambda m: dict(m, sampler=dict(m["sampler"], shift="1")), "sampler.shift"),
        (lambda m: dict(m, codec={}), "codec.patch_size"),
        (lambda m: dict(m, latents_std=[0.0] * 16), "latents_std"),
        (lambda m: dict(m, files=["x"]), "files must map"),
    ],
)
def test_broken_manifests_name_the_file_and_the_field(model_dir, edit, match):
    edit_manifest(model_dir, edit)
    with pytest.raises(ModelLoadError, match=match) as info:
        load_backend(model_dir)
    assert str(model_dir) in str(info.value)


def test_a_bit_flip_in_the_weights_is_caught_by_the_manifest_hash(model_dir):
    weights = model_dir / "transformer" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its sha256") as info:
        load_backend(model_dir)
    assert str(weights) in str(info.value)


@pytest.mark.parametrize("change", [-1, +1])
def test_a_transformer_config_that_does_not_fit_its_weights_is_refused(model_dir, change):
    config_path = model_dir / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["num_layers"] += change
    config_path.write_text(json.dumps(config))
    # the hash records the edited config, so only the weights-fit check can catch it
    edit_manifest(model_dir, lambda m: dict(m, files=dict(m["files"], **{"transformer/config.json": file_sha256(config_path)})))
    with pytest.raises(ModelLoadError, match="transformer") as info:
        load_backend(model_dir)
    assert str(model_dir) in str(info.value)


def test_the_shipped_manifest_records_every_file():
    manifest = json.loads((shipped_model_path() / MANIFEST).read_text())
    assert set(manifest["files"]) == {"codec/config.json", "codec/diffusion_pytorch_model.safetensors",
                                      "camera_tokens.safetensors", "codec_embedding.safetensors",
                                      "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"}


def test_first_loads_in_four_threads_at_once_succeed():
    """In a fresh process (nothing imported or cached yet), as a user's threaded launcher would."""
    script = """
import threading, gymnasium as gym, mirage_gym
errors, envs = [], []
def make():
    try:
        envs.append(gym.make("MirageWorld-v0"))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=make) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
assert len({id(e.unwrapped.world.backend) for e in envs}) == 1  # one shared model
print("ok", len(envs))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok 4" in result.stdout, result.stderr[-2000:]
