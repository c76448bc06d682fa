"""The command line: bad arguments end in one-line messages and exit codes, not tracebacks,
and a failed command leaves no half-written output."""

import os

import numpy as np
import pytest

from mirage_gym import cli


@pytest.mark.parametrize(
    "argv, match",
    [
        (["render", "--views", "0"], "--views: expected an integer >= 1, got 0"),
        (["render", "--views", "x"], "--views: expected an integer, got 'x'"),
        (["render", "--size", "-4"], "--size: expected an integer >= 8"),
        (["render", "--seed", "-1"], "--seed: expected an integer >= 0"),
        (["render", "--dynamic", "-2"], "--dynamic"),
        (["demo", "--env", "CartPole-v1"], "unknown env id 'CartPole-v1'"),
        (["demo", "--model", "/no/such/model"], "no such folder"),
        (["play", "--zoom", "0"], "--zoom: expected a positive number"),
        (["train", "tiny", "--sequences", "-5"], "--sequences: expected an integer >= 1"),
        (["train", "tiny", "--threads", "0"], "--threads"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_an_unwritable_output_exits_1_and_writes_nothing(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes")
        assert cli.main(["render", "--views", "2", "--size", "16", "--out", str(locked / "scene.png")]) == 1
        assert "not writable" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_an_output_that_is_a_file_or_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["render", "--views", "2", "--size", "16", "--out", str(blocker / "scene.png")]) == 1
    assert "not writable" in capsys.readouterr().err
    assert cli.main(["render", "--views", "2", "--size", "16", "--out", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_a_failed_demo_removes_the_folder_it_made(tmp_path, monkeypatch, capsys):
    import mirage_gym.demo

    def fail_midway(out, **kwargs):
        out.mkdir(parents=True)
        (out / "tour.mp4").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(mirage_gym.demo, "run_demo", fail_midway)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 1
    assert "disk full" in capsys.readouterr().err and not out.exists()


def test_render_reset_seed_shows_the_scene_reset_starts_from(tmp_path):
    import gymnasium as gym

    from mirage_gym.env import reset_scene_seed
    from stand_in import PoolingBackend

    env = gym.make("MirageWorld-v0", model=PoolingBackend())
    a, _ = env.reset(seed=12)
    b, _ = env.reset(seed=0, options={"scene_seed": reset_scene_seed(12)})
    np.testing.assert_array_equal(a, b)
    assert cli.main(["render", "--reset-seed", "12", "--views", "1", "--size", "16", "--out", str(tmp_path / "s.png")]) == 0


def test_play_without_a_display_fails_fast(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    assert cli.main(["play"]) == 1
    err = capsys.readouterr().err
    assert ("pygame is not installed" in err or "needs a display" in err) and "Traceback" not in err
