"""`mirage-gym serve`: the websocket protocol through Starlette's test client (no sockets)."""

import base64
import io
import json

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

import mirage_gym  # noqa: E402,F401
from mirage_gym.cli import main  # noqa: E402
from mirage_gym.serve import ServeConfig, Session, create_app, for_address  # noqa: E402


def rgb(message: dict, key: str = "frame") -> np.ndarray:
    image = message[key]
    return np.frombuffer(base64.b64decode(image["rgb"]), np.uint8).reshape(image["height"], image["width"], 3)


def png(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def start(ws) -> tuple[dict, dict]:
    """The hello and the first frame a new world sends."""
    hello = ws.receive_json()
    assert hello["type"] == "hello"
    first = ws.receive_json()
    assert first["type"] == "frame" and first["stats"]["step"] == 0
    return hello, first


def ask(ws, message) -> dict:
    ws.send_text(message if isinstance(message, str) else json.dumps(message))
    return ws.receive_json()


def client(**config) -> TestClient:
    return TestClient(create_app(ServeConfig(**config)))


def test_page_health_and_actions_named_by_the_env():
    with client() as c:
        page = c.get("/")
        assert page.status_code == 200 and "new WebSocket" in page.text and "image-rendering: pixelated" in page.text
        assert c.get("/health").json() == {"sessions": 0, "max_sessions": 4, "served": 0}
        with c.websocket_connect("/ws") as ws:
            hello, first = start(ws)
            env = gym.make("MirageWorld-v0")
            assert hello["actions"] == env.unwrapped.get_action_meanings()
            assert hello["keys"]["MOVE_FORWARD"] == "w" and hello["keys"]["TURN_LEFT"] == "ArrowLeft"
            assert hello["keys"]["NOOP"] == " "
            assert rgb(first).shape == (64, 64, 3) and rgb(first, "map").shape == (64, 64, 3) and first["twin"] is None
            # the same start as the env itself: reset(seed=0), render_map's frame | map
            env = gym.make("MirageWorld-v0", render_mode="rgb_array", render_map=True)
            env.reset(seed=0)
            image = env.render()
            assert np.array_equal(rgb(first), image[:, :64]) and np.array_equal(rgb(first, "map"), image[:, 64:])
            assert c.get("/health").json()["sessions"] == 1

            by_index = ask(ws, {"type": "action", "action": 5})
            by_name = ask(ws, {"type": "action", "action": "TURN_RIGHT"})
            assert (by_index["stats"]["step"], by_name["stats"]["step"]) == (1, 2)
            assert not np.array_equal(rgb(by_index), rgb(first))
            for key in ("memory_points", "memory_bytes", "coverage_voxels", "collision", "step_ms", "novelty"):
                assert key in by_name["stats"]
            again = ask(ws, {"type": "reset", "seed": 0})
            assert again["stats"]["step"] == 0 and np.array_equal(rgb(again), rgb(first))
            other = ask(ws, {"type": "reset", "seed": 5})
            assert not np.array_equal(rgb(other), rgb(first))
            assert ask(ws, {"type": "reset", "seed": None})["type"] == "frame"
    assert c.app.state.counts["sessions"] == 0


@pytest.mark.parametrize("max_message_bytes", [4096])
def test_malformed_and_oversized_messages_are_refused_and_change_nothing(max_message_bytes):
    with client(max_message_bytes=max_message_bytes) as c, c.websocket_connect("/ws") as ws:
        start(ws)
        ask(ws, {"type": "action", "action": 0})
        refused = [
            "not json", "[1, 2]", "{}", '{"type": "fly"}', '{"type": "action", "action": 0, "path": "/etc/passwd"}',
            {"type": "action", "action": 9}, {"type": "action", "action": -1}, {"type": "action", "action": True},
            {"type": "action", "action": 1.0}, {"type": "action", "action": "JUMP"}, {"type": "action"},
            {"type": "reset", "seed": -1}, {"type": "reset", "seed": True}, {"type": "reset", "seed": "0"},
            {"type": "record", "on": "yes"}, {"type": "twin", "on": 1}, {"type": "video"},
            {"type": "image", "data": "%%%"}, {"type": "image", "data": 12},
            {"type": "action", "action": 0, "pad": "x" * max_message_bytes},  # over the size limit
            "[" * 100000,  # deeply nested and over the limit
        ]
        for message in refused:
            reply = ask(ws, message)
            assert reply["type"] == "error" and reply["message"], message
            assert not reply.get("fatal")
        ws.send_bytes(b"\x00\x01")
        assert "binary" in ws.receive_json()["message"]
        assert ask(ws, "[" * 1000)["type"] == "error"  # nesting under the size limit
        after = ask(ws, {"type": "action", "action": 0})
        assert after["type"] == "frame" and after["stats"]["step"] == 2  # nothing refused took a step


def test_image_start_and_its_refusals():
    with client(max_image_bytes=200_000, max_image_pixels=200 * 200) as c, c.websocket_connect("/ws") as ws:
        _, first = start(ws)
        frame = ask(ws, {"type": "image", "data": b64(png(120, 90))})
        assert frame["type"] == "frame" and frame["stats"]["step"] == 0 and not np.array_equal(rgb(frame), rgb(first))
        jpeg = io.BytesIO()
        Image.fromarray(np.full((70, 90, 3), 128, np.uint8)).save(jpeg, format="JPEG")
        assert ask(ws, {"type": "image", "data": b64(jpeg.getvalue()), "fov_deg": 70})["type"] == "frame"
        refusals = {
            "PNG, JPEG or WebP": b"GIF89a" + bytes(100),
            "PNG, JPEG or WebP ": b"just some text, not an image",
            "could not be read": b"\x89PNG\r\n\x1a\n" + bytes(200),  # a PNG signature and nothing valid after
            "over the limit of 40000 pixels": png(300, 200),
            "over the limit of 200000 bytes": b"\x89PNG\r\n\x1a\n" + bytes(200_001),
            "too small": png(4, 4),
        }
        for words, data in refusals.items():
            reply = ask(ws, {"type": "image", "data": b64(data)})
            assert reply["type"] == "error" and words.strip() in reply["message"], (words, reply)
        reply = ask(ws, {"type": "image", "data": b64(png(64, 64)), "fov_deg": 500})
        assert reply["type"] == "error" and "fov_deg" in reply["message"]
        assert ask(ws, {"type": "action", "action": 0})["stats"]["step"] == 1  # the world goes on


def test_snapshot_round_trip_and_refused_snapshots(tmp_path):
    with client() as c, c.websocket_connect("/ws") as ws:
        start(ws)
        for action in (0, 4, 0):
            ask(ws, {"type": "action", "action": action})
        saved = ask(ws, {"type": "snapshot"})
        assert saved["type"] == "snapshot" and saved["name"].endswith(".mirage") and "/" not in saved["name"]
        data = base64.b64decode(saved["data"])
        at_save = ask(ws, {"type": "action", "action": 8})  # only to read the frame: steps on
        walked_on = ask(ws, {"type": "action", "action": 2})
        loaded = ask(ws, {"type": "load_snapshot", "data": saved["data"]})
        assert loaded["type"] == "frame" and loaded["stats"]["step"] == 3
        resumed = ask(ws, {"type": "action", "action": 8})
        assert resumed["stats"]["step"] == 4 and np.array_equal(rgb(resumed), rgb(at_save))  # RNG and memory came back
        assert np.array_equal(rgb(ask(ws, {"type": "action", "action": 2})), rgb(walked_on))

        # the file is the project's snapshot: mirage_gym.load_snapshot reads it into a fresh env
        path = tmp_path / "world.mirage"
        path.write_bytes(data)
        env = gym.make("MirageWorld-v0", render_mode="rgb_array")
        mirage_gym.load_snapshot(env, path)
        assert np.array_equal(env.step(8)[0], rgb(at_save))

        flipped = bytearray(data)
        flipped[-5] ^= 0xFF
        for bad, words in ((bytes(flipped), "checksum"), (b"not a snapshot", "corrupt")):
            reply = ask(ws, {"type": "load_snapshot", "data": b64(bad)})
            assert reply["type"] == "error" and words in reply["message"]
            assert "the uploaded snapshot" in reply["message"] and "mirage-serve-" not in reply["message"]
        assert ask(ws, {"type": "action", "action": 8})["stats"]["step"] == 6  # the world was left as it was


def test_snapshot_upload_limit():
    with client(max_snapshot_bytes=1000) as c, c.websocket_connect("/ws") as ws:
        start(ws)
        saved = ask(ws, {"type": "snapshot"})
        reply = ask(ws, {"type": "load_snapshot", "data": saved["data"]})
        assert reply["type"] == "error" and "over the limit of 1000 bytes" in reply["message"]


def test_memory_twin_and_mp4_recording(tmp_path):
    import imageio.v3 as iio

    with client() as c, c.websocket_connect("/ws") as ws:
        _, first = start(ws)
        ask(ws, {"type": "action", "action": 0})
        twin = ask(ws, {"type": "twin", "on": True})
        assert twin["stats"]["step"] == 0 and twin["twin"] is not None  # both worlds start again, side by side
        assert np.array_equal(rgb(twin), rgb(first))
        assert ask(ws, {"type": "record", "on": True})["stats"]["recording"]
        frames = [ask(ws, {"type": "action", "action": a}) for a in (4, 4, 4, 5, 5, 5)]
        assert all(f["twin"] is not None for f in frames)
        assert frames[-1]["stats"]["twin_memory_points"] > 0
        # back at the start pose: the world with memory shows its start frame again, the twin does not
        def err(a, b):
            return np.abs(a.astype(float) - b.astype(float)).mean()

        assert err(rgb(frames[-1]), rgb(first)) < err(rgb(frames[-1], "twin"), rgb(first))
        off = ask(ws, {"type": "twin", "on": False})  # recorded too: the clip is as wide as its widest frame
        assert off["twin"] is None and off["stats"]["step"] == 6
        ask(ws, {"type": "action", "action": 0})
        assert ask(ws, {"type": "record", "on": False})["stats"]["recorded_frames"] == 9
        video = ask(ws, {"type": "video"})
        assert video["type"] == "video" and video["frames"] == 9 and video["name"].endswith(".mp4")
        path = tmp_path / "walk.mp4"
        path.write_bytes(base64.b64decode(video["data"]))
        clip = iio.imread(path, index=None)
        assert clip.shape == (9, 4 * 64, 4 * 3 * 64, 3)  # frame | map | twin, scaled up 4x
        # a world resumed from a snapshot has no seed or image to start a twin from
        ask(ws, {"type": "load_snapshot", "data": ask(ws, {"type": "snapshot"})["data"]})
        assert "snapshot" in ask(ws, {"type": "twin", "on": True})["message"]


def test_session_limit_and_independent_sessions():
    with client(max_sessions=2, max_message_bytes=4096) as c:
        with c.websocket_connect("/ws") as a, c.websocket_connect("/ws") as b:
            start(a)
            start(b)
            with c.websocket_connect("/ws") as full:
                reply = full.receive_json()
                assert reply["type"] == "error" and reply["code"] == "full" and "2 of 2" in reply["message"]
                with pytest.raises(WebSocketDisconnect) as closed:
                    full.receive_json()
                assert closed.value.code == 1013
            assert ask(a, "garbage")["type"] == "error"
            assert "over the limit" in ask(a, {"type": "image", "data": "A" * 5000})["message"]
            assert ask(b, {"type": "action", "action": 0})["stats"]["step"] == 1
            assert ask(a, {"type": "action", "action": 0})["stats"]["step"] == 1
        with c.websocket_connect("/ws") as again:  # the slots came back
            start(again)


def test_an_idle_world_is_closed():
    with client(idle_timeout=0.3) as c, c.websocket_connect("/ws") as ws:
        start(ws)
        closed = ws.receive_json()  # no message sent: the server gives up on this world
        assert closed["type"] == "closed" and "idle" in closed["reason"]
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    assert c.app.state.counts["sessions"] == 0


class BreaksOnNoop(Session):
    def step(self, action):
        if action == 8:
            raise RuntimeError("boom")
        return super().step(action)


def test_a_crashed_world_closes_only_its_session():
    with TestClient(create_app(ServeConfig(max_sessions=2), session_factory=BreaksOnNoop)) as c:
        with c.websocket_connect("/ws") as a, c.websocket_connect("/ws") as b:
            start(a)
            start(b)
            reply = ask(a, {"type": "action", "action": 8})
            assert reply["type"] == "error" and reply["fatal"] and "boom" in reply["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                a.receive_json()
            assert closed.value.code == 1011
            assert ask(b, {"type": "action", "action": 0})["stats"]["step"] == 1
        assert c.get("/health").json()["sessions"] == 0

    def broken(config, workdir):
        raise OSError("no model here")

    with TestClient(create_app(ServeConfig(), session_factory=broken)) as c, c.websocket_connect("/ws") as ws:
        reply = ws.receive_json()
        assert reply["fatal"] and "failed to start" in reply["message"] and "no model here" in reply["message"]
        assert c.get("/health").status_code == 200  # the server is still up


def test_pages_from_other_sites_and_unknown_host_names_are_refused():
    with client(allowed_hosts=("127.0.0.1", "localhost", "::1")) as c:
        assert c.get("/").status_code == 403  # the test client's Host is "testserver"
        assert c.get("/", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
        assert c.get("/", headers={"host": "evil.example:8000"}).status_code == 403  # DNS rebinding
        with c.websocket_connect("/ws", headers={"host": "evil.example"}) as ws:
            reply = ws.receive_json()
            assert reply["code"] == "forbidden" and "evil.example" in reply["message"]
    with client() as c:
        with c.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
            reply = ws.receive_json()
            assert reply["code"] == "forbidden" and "evil.example" in reply["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1008
        with c.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:  # its own page
            start(ws)
        assert c.app.state.counts["served"] == 1
    assert for_address(ServeConfig(), "127.0.0.1").allowed_hosts == ("127.0.0.1", "localhost", "::1")
    assert for_address(ServeConfig(), "0.0.0.0").allowed_hosts is None  # the user chose to serve the network


@pytest.mark.parametrize("argv, words", [
    (["serve", "--set", "oops"], "KEY=VALUE"),
    (["serve", "--port", "-1"], "integer >= 0"),
    (["serve", "--env-id", "CartPole-v1"], "unknown env id"),
])
def test_serve_bad_arguments_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["serve", "--env-id", "MirageWorldContinuous-v0"], "discrete actions"),
    (["serve", "--set", "render_map=false"], "serve sets"),
    (["serve", "--set", "no_such_argument=1"], "no_such_argument"),
])
def test_serve_refuses_envs_it_cannot_drive(argv, words, capsys):
    assert main(argv) == 1
    assert words in capsys.readouterr().err


def test_quick_load_benchmark_reports_every_figure(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    pytest.importorskip("websockets")
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    sys.modules.pop("serve", None)
    import serve as bench

    result = bench.main(["--quick", "--json", str(tmp_path / "serve.json")])
    assert json.loads((tmp_path / "serve.json").read_text()) == result
    assert [level["clients"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert level["frames_per_s_per_client_min"] > 0 and level["server_rss_mb_peak"] > 0
    assert result["direct_env_steps_per_s"]["before"] > 0 and result["direct_env_steps_per_s"]["after"] > 0


def test_serve_command_builds_the_config_and_binds_loopback(monkeypatch, capsys):
    import mirage_gym.serve as serve_module

    calls = []
    monkeypatch.setattr(serve_module, "serve", lambda config, host, port: calls.append((config, host, port)))
    assert main(["serve", "--port", "8123", "--max-sessions", "2", "--idle-timeout", "30", "--seed", "3",
                 "--set", "move_step=0.3", "--set", "scene_kind=indoor"]) == 0
    (config, host, port), = calls
    assert (host, port, config.max_sessions, config.idle_timeout, config.start_seed) == ("127.0.0.1", 8123, 2, 30.0, 3)
    assert config.env_kwargs == {"model": "tiny", "move_step": 0.3, "scene_kind": "indoor"}
    out = capsys.readouterr()
    assert "http://127.0.0.1:8123/" in out.out and "warning" not in out.err
    main(["serve", "--host", "0.0.0.0"])
    assert "no login" in capsys.readouterr().err
