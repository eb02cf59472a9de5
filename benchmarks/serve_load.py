"""A bounded load test of `gamma-iqa serve` beside `gamma-iqa score` on the same images, in one run (loopback only).

1. Generates --images JPEGs and times `gamma-iqa score` on them in this process (after a warm-up run): images/s.
2. Starts `gamma-iqa serve` in a subprocess on 127.0.0.1 (a free port), then --clients threads post one image each
   per request (raw body, keep-alive connections) for --warmup seconds, not counted, then for --duration seconds or
   until --requests requests, whichever comes first.
3. Reports requests without error, the server's images/s, p50/p99 latency, the server's RSS after the warm-up and at
   the end (memory flat: their difference), the CLI's images/s and the ratio server/CLI (the issue's target: >= 0.7),
   and whether each image's score from the server equals the CLI's bit for bit. The last line of stdout is one JSON
   object.

    python benchmarks/serve_load.py --model gamma-lite --clients 32 --duration 60
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from score_e2e import make_photos as draw_photos  # a sibling script: benchmarks/ is on the path when run

from gamma_iqa.cli import main as cli_main


def make_photos(folder: Path, n: int, width: int, height: int) -> list[Path]:
    """n JPEGs (quality 90) with smooth structure and noise: score_e2e.py's synthetic photos, their paths in order."""
    draw_photos(folder, n, width, height)
    return [folder / f"{i:05d}.jpg" for i in range(n)]


def cli_scores(model: str, paths: list[Path]) -> tuple[float, dict[str, float]]:
    """(images/s of `gamma-iqa score` on `paths` after a warm-up run, {file name: score})."""
    out = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()):
        cli_main(["score", "--model", model, "--format", "json", str(paths[0])])  # warm-up (model load, caches)
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = cli_main(["score", "--model", model, "--format", "json", *map(str, paths)])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"gamma-iqa score exited {code}")
    return len(paths) / seconds, {Path(r["path"]).name: r["score"] for r in json.loads(out.getvalue())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(conn: http.client.HTTPConnection, data: bytes, name: str) -> tuple[int, dict]:
    conn.request("POST", "/v1/score", body=data, headers={"Content-Type": "image/jpeg"})
    r = conn.getresponse()
    body = json.loads(r.read())
    if r.status == 200:
        body["rows"][0]["path"] = name
    return r.status, body


class Load:
    """The client threads and what they measured (latencies of the counted requests, their statuses)."""

    def __init__(self, port: int, images: dict[str, bytes], clients: int, budget: int) -> None:
        self.port, self.images, self.clients, self.budget = port, list(images.items()), clients, budget
        self.counting = False
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.sent = 0

    def client(self, k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        i = k
        while not self.stop.is_set():
            name, data = self.images[i % len(self.images)]
            i += self.clients
            start = time.perf_counter()
            try:
                status, _ = post(conn, data, name)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            with self.lock:
                if self.counting:
                    self.latencies.append(time.perf_counter() - start)
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    self.sent += 1
                    if self.sent >= self.budget:
                        self.stop.set()
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gamma-iqa serve exited {proc.returncode}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.2)
    raise SystemExit("gamma-iqa serve did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gamma-lite")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds counted (after the warm-up)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before counting")
    p.add_argument("--requests", type=int, default=100_000, help="most requests counted")
    p.add_argument("--images", type=int, default=32, help="distinct images (also the CLI's run)")
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the images")
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.images, width, height)
        images = {path.name: path.read_bytes() for path in paths}
        cli_rate, cli = cli_scores(args.model, paths)
        print(f"gamma-iqa score: {cli_rate:.2f} images/s on {len(paths)} images", file=sys.stderr)

        port = free_port()
        cmd = [sys.executable, "-m", "gamma_iqa", "serve", "--model", args.model, "--port", str(port)]
        proc = subprocess.Popen([*cmd, "--max-queue", str(4 * args.clients)], env=os.environ.copy())
        try:
            wait_ready(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            served = {name: post(conn, data, name)[1]["rows"][0]["score"] for name, data in images.items()}
            conn.close()
            load = Load(port, images, args.clients, args.requests)
            threads = [threading.Thread(target=load.client, args=(k,), daemon=True) for k in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(args.warmup)
            rss_warm = rss_mb(proc.pid)
            with load.lock:
                load.counting, start = True, time.perf_counter()
            load.stop.wait(args.duration)
            with load.lock:
                load.counting, seconds = False, time.perf_counter() - start
            load.stop.set()
            rss_end = rss_mb(proc.pid)
            for t in threads:
                t.join(timeout=180)
        finally:
            proc.terminate()
            code = proc.wait(timeout=120)
    ok = load.statuses.get(200, 0)
    lat = np.array(load.latencies) * 1000
    rate = ok / seconds
    result = {
        "model": args.model,
        "clients": args.clients,
        "seconds": round(seconds, 1),
        "requests": load.sent,
        "ok": ok,
        "errors": load.sent - ok,
        "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
        "server_images_per_s": round(rate, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "cli_images_per_s": round(cli_rate, 2),
        "ratio": round(rate / cli_rate, 3),
        "scores_equal_cli": served == cli,
        "server_exit": code,
        "torch_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
