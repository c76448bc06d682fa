"""``mirage-gym serve``: walk a generated world in a browser.

An ASGI app (Starlette, served by uvicorn) with one static page and one websocket. Each
connected browser gets its own world: a ``gym.make`` env built with ``render_map=True``,
so the page shows the frame and the bird's-eye memory map that ``mirage-gym play`` shows.

Protocol (JSON text messages; every server message has a ``type``):

* server -> client on connect: ``hello`` (action names from the env's
  ``get_action_meanings()``, the key for each, the limits), then a ``frame`` for the
  start (``reset(seed=start_seed)``, 0 unless configured).
* client -> server:
  ``{"type": "action", "action": 3}`` (an index or an action name);
  ``{"type": "reset", "seed": 7}`` (``seed`` a non-negative int or null);
  ``{"type": "image", "data": BASE64}`` (a PNG/JPEG/WebP file to start from; optional ``fov_deg``);
  ``{"type": "snapshot"}`` (answered by ``snapshot`` with the file as base64);
  ``{"type": "load_snapshot", "data": BASE64}`` (a file ``snapshot`` gave);
  ``{"type": "record", "on": true}`` / ``{"type": "video"}`` (answered by ``video``, an mp4 as base64);
  ``{"type": "twin", "on": true}`` (a second world without memory, from the same start).
* server -> client after each of those: a ``frame`` (raw RGB frames as base64 and the
  figures), or ``error`` (the refusal in words; the world is as it was). Refused messages
  (not JSON, unknown type, wrong fields, over the size limit) change nothing. When the
  server is full the client gets ``error`` with ``code: "full"`` and the socket closes
  (1013); an idle world gets ``closed`` and the socket closes (1000); a world whose env
  raised something unexpected gets ``error`` with ``fatal: true`` and the socket closes
  (1011): other sessions carry on.

A websocket opened by a page from another site (its ``Origin`` is not the server's own
address) is refused, and ``serve`` on a loopback address answers only to loopback host
names (no DNS rebinding). Nothing the client sends names a file: uploads are written to files the server names in
its own temporary folder and removed afterwards. Env work runs on a thread pool (torch
releases the GIL), one call at a time per session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("mirage_gym.serve")

PAGE = Path(__file__).with_name("serve_page.html")

# keys per action name (the browser's KeyboardEvent.key); names the env does not have are skipped
KEYS = {
    "MOVE_FORWARD": "w", "MOVE_BACKWARD": "s", "STRAFE_LEFT": "a", "STRAFE_RIGHT": "d",
    "TURN_LEFT": "ArrowLeft", "TURN_RIGHT": "ArrowRight", "LOOK_UP": "ArrowUp", "LOOK_DOWN": "ArrowDown",
    "NOOP": " ", "STOP": "Enter",
}
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}  # plus WebP (RIFF....WEBP), checked below
MAX_SEED = 2**63 - 1
VIDEO_SCALE = 4


@dataclass
class ServeConfig:
    """What ``create_app`` serves. Sizes are bytes of the decoded payload unless named otherwise."""

    env_id: str = "MirageWorld-v0"
    env_kwargs: dict = field(default_factory=dict)
    max_sessions: int = 4  # worlds at once; one more browser is told the server is full
    idle_timeout: float = 600.0  # seconds without a message before a world is closed
    max_message_bytes: int = 12 * 2**20  # a websocket message of more characters is refused (base64 text)
    max_image_bytes: int = 4 * 2**20  # an uploaded start image
    max_image_pixels: int = 4096 * 4096
    max_snapshot_bytes: int = 8 * 2**20  # an uploaded snapshot
    max_record_frames: int = 1000  # recording stops there (each frame is kept raw until the mp4 is made)
    start_seed: int = 0  # the world a new browser sees first
    workers: int | None = None  # threads that run env work; None: one per core, at least 2
    # Host header names accepted (without port); None accepts any. `serve` on a loopback address
    # sets the loopback names, so a web page elsewhere cannot reach the server by DNS rebinding.
    allowed_hosts: tuple[str, ...] | None = None


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class Refusal(ValueError):
    """A client request the server turns down; the message goes back to the client as is."""


# --------------------------------------------------------------------------- the world of one browser


class Session:
    """One browser's world (and its memory-less twin): every method runs on a worker thread."""

    def __init__(self, config: ServeConfig, workdir: Path):
        import gymnasium as gym

        import mirage_gym  # noqa: F401  (registers the ids)

        self.config = config
        self.workdir = workdir
        self.env = gym.make(config.env_id, render_mode="rgb_array", render_map=True, **config.env_kwargs)
        self.actions = list(self.env.unwrapped.get_action_meanings())
        self.twin = None  # the same world without memory, or None
        self.start: dict | None = None  # how the current episode began: {"seed": s} or {"image": rgb, "fov_deg": f}
        self.steps = 0
        self.done = ""
        self.info: dict = {}
        self.twin_info: dict = {}
        self.reward = 0.0
        self.step_ms = 0.0
        self.recording = False
        self.video_frames: list[np.ndarray] = []  # what the page showed while recording, raw (64 px high)

    def close(self) -> None:
        for env in (self.env, self.twin):
            if env is not None:
                with contextlib.suppress(Exception):
                    env.close()

    # ---- starts

    def reset_seed(self, seed: int | None) -> dict:
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        self.start = {"seed": seed}
        _, self.info = self.env.reset(seed=seed)
        if self.twin is not None:
            _, self.twin_info = self.twin.reset(seed=seed)
        return self._started()

    def reset_image(self, data: bytes, fov_deg) -> dict:
        rgb = decode_image(data, self.config.max_image_bytes, self.config.max_image_pixels)
        options = {"image": rgb}
        if fov_deg is not None:
            options["fov_deg"] = fov_deg
        try:
            _, info = self.env.reset(options=options)
        except ValueError as exc:  # the env's own checks (fov_deg range, ...)
            raise Refusal(f"the env refused the image: {exc}") from None
        self.info = info
        self.start = options
        if self.twin is not None:
            _, self.twin_info = self.twin.reset(options=dict(options))
        return self._started()

    def _started(self) -> dict:
        self.steps, self.done, self.reward = 0, "", 0.0
        return self.frame_message()

    # ---- steps

    def step(self, action) -> dict:
        if isinstance(action, str):
            if action not in self.actions:
                raise Refusal(f"unknown action {action!r}; actions are {self.actions}")
            action = self.actions.index(action)
        if type(action) is not int or not 0 <= action < len(self.actions):
            raise Refusal(f"action must be an index 0-{len(self.actions) - 1} or one of {self.actions}, got {action!r}")
        if self.done:
            raise Refusal(f"the episode has ended ({self.done}); reset to start another")
        began = time.perf_counter()
        _, reward, terminated, truncated, self.info = self.env.step(action)
        if self.twin is not None:
            _, _, twin_terminated, twin_truncated, self.twin_info = self.twin.step(action)
            terminated, truncated = terminated or twin_terminated, truncated or twin_truncated
        self.step_ms = 1000 * (time.perf_counter() - began)
        self.steps = self._episode_steps()
        self.reward += float(reward)
        if terminated or truncated:
            self.done = self._ending(terminated)
        return self.frame_message()

    def _episode_steps(self) -> int:
        try:  # gym.make's TimeLimit keeps the episode clock (load_snapshot sets it too)
            return int(self.env.get_wrapper_attr("_elapsed_steps"))
        except AttributeError:
            return self.steps + 1

    def _ending(self, terminated: bool) -> str:
        if not terminated:
            return f"time limit of {self.steps} steps"
        if "success" in self.info:
            return "STOP: goal reached" if self.info["success"] else "STOP: goal not reached"
        return "terminated"

    # ---- snapshots (the project's format and checks; only server-named files)

    def snapshot(self) -> dict:
        import mirage_gym

        if self.start is None:
            raise Refusal("nothing to save yet")
        path = self.workdir / f"{uuid.uuid4().hex}.snapshot"
        try:
            mirage_gym.save_snapshot(self.env, path)
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        name = f"{self.config.env_id}-step{self.steps}.mirage"
        return {"type": "snapshot", "name": name, "bytes": len(data), "data": base64.b64encode(data).decode()}

    def load_snapshot(self, data: bytes) -> dict:
        import mirage_gym
        from mirage_gym.snapshot import SnapshotError

        if len(data) > self.config.max_snapshot_bytes:
            raise Refusal(f"snapshot of {len(data)} bytes is over the limit of {self.config.max_snapshot_bytes} bytes")
        path = self.workdir / f"{uuid.uuid4().hex}.snapshot"
        try:
            path.write_bytes(data)
            _, self.info = mirage_gym.load_snapshot(self.env, path)
        except SnapshotError as exc:
            raise Refusal(str(exc).replace(str(path), "the uploaded snapshot")) from None
        finally:
            path.unlink(missing_ok=True)
        self.start = {"snapshot": True}
        if self.twin is not None:  # a snapshot holds one world's memory: the twin cannot start from it
            self.twin.close()
            self.twin, self.twin_info = None, {}
        self.steps = self._episode_steps()
        self.done, self.reward = "", 0.0
        return self.frame_message()

    # ---- memory twin

    def set_twin(self, on: bool) -> dict:
        import gymnasium as gym

        if not on:
            if self.twin is not None:
                self.twin.close()
            self.twin, self.twin_info = None, {}
            return self.frame_message()
        if self.start is None or "snapshot" in self.start:
            raise Refusal("the memory twin starts from a seed or an image; this world was resumed from a snapshot: reset first")
        kwargs = {**self.config.env_kwargs, "use_memory": False}
        twin = gym.make(self.config.env_id, render_mode="rgb_array", render_map=True, **kwargs)
        self.twin = twin
        # both worlds start again from the same start, so they walk side by side from there
        if "seed" in self.start:
            return self.reset_seed(self.start["seed"])
        _, self.info = self.env.reset(options=dict(self.start))
        _, self.twin_info = twin.reset(options=dict(self.start))
        return self._started()

    # ---- recording

    def set_recording(self, on: bool) -> dict:
        """Recording on starts a new clip (resets and twin switches are recorded too)."""
        self.recording = on
        if on:
            self.video_frames = []
        return self.frame_message()

    def video(self) -> dict:
        if not self.video_frames:
            raise Refusal("nothing recorded: turn recording on and walk first")
        width = max(f.shape[1] for f in self.video_frames)  # the twin may have been on for part of it
        path = self.workdir / f"{uuid.uuid4().hex}.mp4"
        try:
            # frame by frame, scaled up as the page shows them (nearest neighbour)
            with _mp4_writer(path) as writer:
                for frame in self.video_frames:
                    padded = np.zeros((frame.shape[0], width, 3), np.uint8)
                    padded[:, : frame.shape[1]] = frame
                    writer.append_data(padded.repeat(VIDEO_SCALE, axis=0).repeat(VIDEO_SCALE, axis=1))
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        count = len(self.video_frames)
        name = f"{self.config.env_id}-{count}frames.mp4"
        return {"type": "video", "name": name, "frames": count, "bytes": len(data), "data": base64.b64encode(data).decode()}

    # ---- what the page shows

    def frame_message(self) -> dict:
        image = self.env.render()  # frame | bird's-eye map, as render_map=True draws it
        height = image.shape[0]
        frame, memory_map = image[:, :height], image[:, height:]
        twin = None
        shown = [frame, memory_map]
        if self.twin is not None:
            twin = self.twin.render()[:, :height]
            shown.append(twin)
        recorded = ""
        if self.recording:
            if len(self.video_frames) < self.config.max_record_frames:
                self.video_frames.append(np.concatenate(shown, axis=1))
            else:
                self.recording = False
                recorded = f"recording stopped at its limit of {self.config.max_record_frames} frames"
        return {
            "type": "frame",
            "frame": _image(frame),
            "map": _image(memory_map),
            "twin": None if twin is None else _image(twin),
            "stats": {
                "step": self.steps,
                "step_ms": round(self.step_ms, 1),
                "reward": round(self.reward, 3),
                "memory_points": int(self.info.get("memory_points", 0)),
                "memory_bytes": int(self.info.get("memory_bytes", 0)),
                "coverage_voxels": int(self.info.get("coverage_voxels", 0)),
                "collision": bool(self.info.get("collision", False)),
                "novelty": round(float(self.info.get("novelty", 0.0)), 3),
                "twin_memory_points": int(self.twin_info.get("memory_points", 0)) if twin is not None else None,
                "done": self.done,
                "recording": self.recording,
                "recorded_frames": len(self.video_frames),
                "notice": recorded,
            },
        }


def _mp4_writer(path: Path):
    import imageio.v2 as iio2

    return iio2.get_writer(path, format="FFMPEG", fps=8, codec="libx264", macro_block_size=1)


def _image(rgb: np.ndarray) -> dict:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "rgb": base64.b64encode(rgb.tobytes()).decode()}


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """An uploaded PNG, JPEG or WebP as an (H, W, 3) uint8 array; raises :class:`Refusal` otherwise."""
    from PIL import Image

    if len(data) > max_bytes:
        raise Refusal(f"image of {len(data)} bytes is over the limit of {max_bytes} bytes")
    kind = next((name for magic, name in IMAGE_TYPES.items() if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WEBP"
    if kind is None:
        raise Refusal("the image must be a PNG, JPEG or WebP file")
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise Refusal(f"image of {width}x{height} pixels is over the limit of {max_pixels} pixels")
            if width < 8 or height < 8:
                raise Refusal(f"image of {width}x{height} pixels is too small (at least 8x8)")
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Refusal:
        raise
    except Exception as exc:  # noqa: BLE001  (a broken upload: PIL raises OSError, SyntaxError, struct.error, ...)
        raise Refusal(f"the {kind} file could not be read: {exc}") from None
    return np.ascontiguousarray(rgb)


# --------------------------------------------------------------------------- the app


def _b64(message: dict, key: str = "data") -> bytes:
    text = message.get(key)
    if not isinstance(text, str):
        raise Refusal(f"'{key}' must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(f"'{key}' is not valid base64") from None


def _flag(message: dict) -> bool:
    on = message.get("on")
    if not isinstance(on, bool):
        raise Refusal("'on' must be true or false")
    return on


def _seed(message: dict):
    seed = message.get("seed")
    if seed is not None and (type(seed) is not int or not 0 <= seed <= MAX_SEED):
        raise Refusal(f"seed must be a non-negative integer or null, got {seed!r}")
    return seed


def _fov(message: dict):
    fov = message.get("fov_deg")
    if fov is not None and (type(fov) not in (int, float) or not 1 <= fov <= 179):
        raise Refusal(f"fov_deg must be a number of degrees in [1, 179] or null, got {fov!r}")
    return fov


# message type -> (the fields it takes, what it does on a session)
HANDLERS = {
    "action": ({"action"}, lambda s, m: s.step(m.get("action"))),
    "reset": ({"seed"}, lambda s, m: s.reset_seed(_seed(m))),
    "image": ({"data", "fov_deg"}, lambda s, m: s.reset_image(_b64(m), _fov(m))),
    "snapshot": (set(), lambda s, m: s.snapshot()),
    "load_snapshot": ({"data"}, lambda s, m: s.load_snapshot(_b64(m))),
    "record": ({"on"}, lambda s, m: s.set_recording(_flag(m))),
    "video": (set(), lambda s, m: s.video()),
    "twin": ({"on"}, lambda s, m: s.set_twin(_flag(m))),
}


def parse_message(text: str, max_bytes: int) -> tuple[dict, object]:
    """The checked message and its handler; raises :class:`Refusal` for anything malformed."""
    if len(text) > max_bytes:
        raise Refusal(f"message of {len(text)} characters is over the limit of {max_bytes}")
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise Refusal("messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise Refusal("messages must be JSON objects")
    kind = message.get("type")
    if kind not in HANDLERS:
        raise Refusal(f"unknown message type {kind!r}; known: {sorted(HANDLERS)}")
    fields, handler = HANDLERS[kind]
    extra = set(message) - fields - {"type"}
    if extra:
        raise Refusal(f"'{kind}' message has unknown fields {sorted(extra)}; it takes {sorted(fields)}")
    return message, handler


def create_app(config: ServeConfig | None = None, session_factory=Session):
    """The Starlette app. ``session_factory(config, workdir)`` makes a browser's world
    (tests pass one that fails on purpose)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    config = config or ServeConfig()
    state = {"sessions": 0, "served": 0}
    workers = config.workers or max(2, os.cpu_count() or 1)
    pool: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        pool["executor"] = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mirage-serve",
                                                                 initializer=_one_torch_thread)
        pool["workdir"] = Path(tempfile.mkdtemp(prefix="mirage-serve-"))
        try:
            yield
        finally:
            pool["executor"].shutdown(wait=False, cancel_futures=True)
            shutil.rmtree(pool["workdir"], ignore_errors=True)

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool["executor"], fn, *args)

    def host_refused(headers) -> str:
        """Why a request's Host or Origin is refused ("" when it is not)."""
        host = headers.get("host", "")
        if config.allowed_hosts is not None and _hostname(host) not in config.allowed_hosts:
            return f"host {host!r} is not served here (this server answers to {list(config.allowed_hosts)})"
        origin = headers.get("origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc != host:
            return f"a page from {origin} may not open a world here"  # another site's page in the user's browser
        return ""

    async def page(request):
        refused = host_refused(request.headers)
        if refused:
            return PlainTextResponse(refused, status_code=403)
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def health(request):
        refused = host_refused(request.headers)
        if refused:
            return PlainTextResponse(refused, status_code=403)
        return JSONResponse({"sessions": state["sessions"], "max_sessions": config.max_sessions, "served": state["served"]})

    async def world(websocket: WebSocket):
        refused = host_refused(websocket.headers)
        await websocket.accept()
        if refused:
            await websocket.send_json({"type": "error", "code": "forbidden", "fatal": True, "message": refused})
            await websocket.close(code=1008)
            return
        if state["sessions"] >= config.max_sessions:
            await websocket.send_json({"type": "error", "code": "full", "fatal": True, "message":
                                       f"the server is full: {config.max_sessions} of {config.max_sessions} worlds are "
                                       "in use; try again later"})
            await websocket.close(code=1013)
            return
        state["sessions"] += 1
        state["served"] += 1
        session = None
        try:
            try:
                session = await run(session_factory, config, pool["workdir"])
                hello = {
                    "type": "hello", "env_id": config.env_id, "actions": session.actions,
                    "keys": {name: KEYS[name] for name in session.actions if name in KEYS},
                    "limits": {"max_message_bytes": config.max_message_bytes, "max_image_bytes": config.max_image_bytes,
                               "max_image_pixels": config.max_image_pixels,
                               "max_snapshot_bytes": config.max_snapshot_bytes,
                               "max_record_frames": config.max_record_frames, "idle_timeout": config.idle_timeout},
                }
                await websocket.send_json(hello)
                await websocket.send_json(await run(session.reset_seed, config.start_seed))
            except WebSocketDisconnect:
                return
            except Exception as exc:  # noqa: BLE001  (a broken world ends this session, not the server)
                log.exception("a world failed to start")
                await _fatal(websocket, f"the world failed to start ({type(exc).__name__}: {exc})")
                return
            await _serve_session(websocket, session)
        finally:
            state["sessions"] -= 1
            if session is not None:
                with contextlib.suppress(Exception):
                    await run(session.close)

    async def _serve_session(websocket, session) -> None:
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=config.idle_timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(Exception):
                    await websocket.send_json({"type": "closed", "reason": f"idle for {config.idle_timeout:g} s; "
                                               "reload the page for a new world"})
                    await websocket.close(code=1000)
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                if text is None:
                    raise Refusal("binary messages are not accepted; send JSON text")
                request, handler = parse_message(text, config.max_message_bytes)
                reply = await run(handler, session, request)
            except Refusal as exc:
                reply = {"type": "error", "message": str(exc)}
            except Exception as exc:  # noqa: BLE001  (this world is in an unknown state: close it, keep the server)
                log.exception("a world failed")
                await _fatal(websocket, f"the world failed ({type(exc).__name__}: {exc}); this session is closed, "
                                        "reload the page for a new world")
                return
            try:
                await websocket.send_json(reply)
            except (WebSocketDisconnect, RuntimeError):
                return

    async def _fatal(websocket, text: str) -> None:
        with contextlib.suppress(Exception):
            await websocket.send_json({"type": "error", "fatal": True, "message": text})
            await websocket.close(code=1011)

    routes = [Route("/", page), Route("/health", health), WebSocketRoute("/ws", world)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.config = config
    app.state.counts = state
    return app


def _one_torch_thread() -> None:
    """Each worker steps one world at a time on one torch thread (the env's default), so
    worlds run side by side on the cores instead of their threads fighting over them."""
    import torch

    torch.set_num_threads(1)


def _hostname(host: str) -> str:
    """The name in a Host header, without its port ("[::1]:8000" -> "::1")."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_config(config: ServeConfig) -> None:
    """Build one world as the server would (loading the model once for all sessions);
    raises ``ValueError`` naming what is wrong."""
    import gymnasium as gym

    taken = {"render_mode", "render_map"} & set(config.env_kwargs)
    if taken:
        raise ValueError(f"serve sets {sorted(taken)} itself; leave them out")
    if config.max_sessions < 1 or not config.idle_timeout > 0:
        raise ValueError("max_sessions must be at least 1 and idle_timeout positive")
    try:
        session = Session(config, Path(tempfile.gettempdir()))
    except TypeError as exc:  # an unknown env argument
        raise ValueError(f"bad env argument: {exc}") from None
    try:
        if not isinstance(session.env.action_space, gym.spaces.Discrete):
            raise ValueError(f"serve drives envs with discrete actions; {config.env_id} with {config.env_kwargs} has "
                             f"{session.env.action_space}")
        session.reset_seed(config.start_seed)
    finally:
        session.close()


def for_address(config: ServeConfig, host: str) -> ServeConfig:
    """``config`` for a server listening on ``host``: on a loopback address it answers only
    to loopback host names unless ``allowed_hosts`` says otherwise."""
    if config.allowed_hosts is None and host in LOOPBACK_NAMES:
        return dataclasses.replace(config, allowed_hosts=LOOPBACK_NAMES)
    return config


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the app with uvicorn until interrupted."""
    import torch
    import uvicorn

    torch.set_num_threads(1)  # each world steps on one thread; worlds run side by side on the pool
    app = create_app(for_address(config, host))
    # over this size the websocket layer itself closes the connection (1009); under it, the app refuses in words
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=2 * config.max_message_bytes,
                ws_ping_interval=20.0, ws_ping_timeout=20.0)
