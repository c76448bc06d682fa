"""`mirage-gym serve` under load: frames/s per browser at 1, 4 and 8 clients, beside one env.

    python benchmarks/serve.py [--quick] [--json PATH] [--clients 1,4,8] [--seconds 25]

Starts `mirage-gym serve` as its own process on a free 127.0.0.1 port (``--quick``: in
this process, on a thread), then for each client count opens that many websocket clients
on loopback, each walking its own world as a browser does (send an action, wait for the
frame, send the next: one action in flight), all at once for ``--seconds``. Reports each
client's frames/s (median, min, max), the total, the round-trip latency and the server's
resident memory (peak over the level). In the same run, one env stepped directly (gym.make,
the same random walk) before and after the clients gives the reference, and (not with
``--quick``) a batched vector env of as many worlds as the most clients shows what stepping
concurrent worlds in one generator forward gives. Only loopback addresses are used; every
level is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

WALK = [0.3, 0.05, 0.075, 0.075, 0.2, 0.2, 0.05, 0.05, 0.0]  # benchmarks/env.py's random walk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`mirage-gym serve` on a free loopback port, in its own process or on a thread here."""

    def __init__(self, max_sessions: int, model: str, in_process: bool):
        self.port = free_port()
        self.in_process = in_process
        if in_process:
            import uvicorn

            from mirage_gym.serve import ServeConfig, check_config, create_app

            config = ServeConfig(env_kwargs={"model": model}, max_sessions=max_sessions)
            check_config(config)
            self.uvicorn = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port,
                                                         log_level="warning"))
            self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
            self.thread.start()
            self.pid = os.getpid()
        else:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mirage_gym", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--max-sessions", str(max_sessions), "--model", model], env=env, stdout=subprocess.DEVNULL)
            self.pid = self.process.pid
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    json.load(r)
                return
            except OSError:
                if time.monotonic() > deadline or (not in_process and self.process.poll() is not None):
                    self.stop()
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.in_process:
            self.uvicorn.should_exit = True
            self.thread.join(timeout=30)
        else:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def client_level(port: int, clients: int, seconds: float, pid: int) -> dict:
    """``clients`` websocket clients walking at once for ``seconds``; frames/s per client."""
    from websockets.sync.client import connect

    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    results: list[dict] = [{} for _ in range(clients)]
    window: dict = {}

    def walk(i: int) -> None:
        rng = np.random.default_rng(i)
        try:
            with connect(f"ws://127.0.0.1:{port}/ws", max_size=None, open_timeout=60) as ws:
                for _ in range(2):  # hello, the first frame
                    ws.recv(timeout=120)
                ready.wait(timeout=300)
                go.wait(timeout=300)
                frames, latencies = 0, []
                while time.monotonic() < window["end"]:
                    sent = time.monotonic()
                    ws.send(json.dumps({"type": "action", "action": int(rng.choice(9, p=WALK))}))
                    reply = json.loads(ws.recv(timeout=120))
                    if reply["type"] != "frame":
                        raise RuntimeError(f"client {i}: {reply}")
                    latencies.append(time.monotonic() - sent)
                    frames += 1
                results[i] = {"frames": frames, "seconds": time.monotonic() - window["start"], "latencies": latencies}
        except Exception as exc:  # noqa: BLE001  (reported in the table)
            results[i] = {"error": f"{type(exc).__name__}: {exc}"}
            ready.abort()

    threads = [threading.Thread(target=walk, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait(timeout=300)
    window["start"] = time.monotonic()
    window["end"] = window["start"] + seconds
    go.set()
    peak = rss_mb(pid)
    while any(t.is_alive() for t in threads):
        time.sleep(0.25)
        peak = max(peak, rss_mb(pid))
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]}")
    per_client = np.array([r["frames"] / r["seconds"] for r in results])
    latencies = np.concatenate([r["latencies"] for r in results])
    return {
        "clients": clients,
        "frames_per_s_per_client_median": float(np.median(per_client)),
        "frames_per_s_per_client_min": float(per_client.min()),
        "frames_per_s_per_client_max": float(per_client.max()),
        "frames_per_s_total": float(per_client.sum()),
        "latency_ms_p50": float(1000 * np.median(latencies)),
        "latency_ms_p95": float(1000 * np.percentile(latencies, 95)),
        "server_rss_mb_peak": peak,
        "seconds": seconds,
    }


def direct_env(seconds: float, model: str) -> dict:
    """One env stepped directly: the browser-free reference."""
    import gymnasium as gym

    import mirage_gym  # noqa: F401

    env = gym.make("MirageWorld-v0", model=model, max_episode_steps=10**6)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        env.step(int(rng.choice(9, p=WALK)))
        steps += 1
    elapsed = time.monotonic() - start
    env.close()
    return {"steps_per_s": steps / elapsed, "seconds": elapsed}


def vector_env(num_envs: int, seconds: float, model: str) -> dict:
    """``num_envs`` worlds in one batched vector env: what stepping sessions together gives."""
    import gymnasium as gym

    import mirage_gym  # noqa: F401

    vec = gym.make_vec("MirageWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", model=model,
                       max_episode_steps=10**6)
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        vec.step(rng.choice(9, p=WALK, size=num_envs))
        steps += 1
    elapsed = time.monotonic() - start
    vec.close()
    return {"num_envs": num_envs, "steps_per_s_per_world": steps / elapsed, "steps_per_s_total": num_envs * steps / elapsed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 2 clients for 1.5 s, server on a thread (CI)")
    parser.add_argument("--clients", default=None, help="client counts, comma-separated (default 1,4,8)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per level (default 25)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    counts = [int(c) for c in (args.clients or ("1,2" if args.quick else "1,4,8")).split(",")]
    seconds = args.seconds or (1.5 if args.quick else 25.0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

    load_before = os.getloadavg()
    server = Server(max(counts), args.model, in_process=args.quick)
    try:
        idle_rss = rss_mb(server.pid)
        before = direct_env(seconds, args.model)
        levels = [client_level(server.port, n, seconds, server.pid) for n in counts]
        after = direct_env(seconds, args.model)
    finally:
        server.stop()
    batched = None if args.quick else vector_env(max(counts), seconds, args.model)
    result = {
        "direct_env_steps_per_s": {"before": before["steps_per_s"], "after": after["steps_per_s"]},
        "levels": levels,
        "vector_env": batched,
        "server": "thread in this process" if args.quick else "own process",
        "server_rss_mb_idle": idle_rss,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "cpus": os.cpu_count(),
    }
    direct = (before["steps_per_s"] + after["steps_per_s"]) / 2
    print(f"one env stepped directly: {before['steps_per_s']:.1f} steps/s before the clients, "
          f"{after['steps_per_s']:.1f} after; server RSS idle {idle_rss:.0f} MB ({result['server']})")
    print("| clients | frames/s per client (median, min-max) | total frames/s | per client vs direct | "
          "latency p50 / p95 | server RSS peak |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lv in levels:
        print(f"| {lv['clients']} | {lv['frames_per_s_per_client_median']:.1f} ({lv['frames_per_s_per_client_min']:.1f}-"
              f"{lv['frames_per_s_per_client_max']:.1f}) | {lv['frames_per_s_total']:.1f} | "
              f"{lv['frames_per_s_per_client_median'] / direct:.2f}x | {lv['latency_ms_p50']:.0f} / "
              f"{lv['latency_ms_p95']:.0f} ms | {lv['server_rss_mb_peak']:.0f} MB |")
    if batched:
        print(f"batched vector env of {batched['num_envs']} worlds (no server): {batched['steps_per_s_per_world']:.1f} "
              f"steps/s per world, {batched['steps_per_s_total']:.1f} in total")
    print(f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
