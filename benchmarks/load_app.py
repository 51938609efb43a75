"""A bounded load and abuse burst against `choi app` (the shipped choi-tiny) on 127.0.0.1.

Starts the app in a subprocess, then, with gradio_client:

1. ``--clients`` clients send ``--requests`` "Generate images" requests each, all at once (a small
   background and box: the queue serialises them, one generation at a time);
2. ``--uploads`` clients upload a 36 MP photo (6000x6000 JPEG made from scikit-image's coffee) at
   once, each running the upload check and the box preview, the handlers that decode an image.

It samples the app process's resident memory (psutil) all along and prints one JSON object: for
each phase, successes, failures (with their first message), median and max latency; the memory at
start, its peak during each phase and after the burst (once the app has been idle ``--settle`` s).

    python benchmarks/load_app.py                            # 8 clients x 3 requests, 8 uploads
    python benchmarks/load_app.py --clients 4 --requests 2 --uploads 4   # on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHONE_SIDE = 6000  # 36 MP


class MemorySampler(threading.Thread):
    """Resident memory of a process and its children, sampled every ``period`` s; the peak since the last mark."""

    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.proc, self.period, self.peak, self.running = psutil.Process(pid), period, 0, True

    def rss(self) -> int:
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period)

    def mark(self) -> int:
        """The peak since the previous mark, and start a new one."""
        peak, self.peak = self.peak, self.rss()
        return peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, outputs: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "choi", "app", "--port", str(port), "--outputs", str(outputs)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited ({proc.returncode}); see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the app did not start within 300 s")


def burst(fn, jobs: list, workers: int) -> dict:
    """Run ``fn(job)`` for every job on ``workers`` threads at once: successes, failures, latencies."""

    def timed(job):
        t = time.perf_counter()
        try:
            fn(job)
            return True, time.perf_counter() - t, ""
        except Exception as err:  # a refused or failed request is a result here, not a crash
            return False, time.perf_counter() - t, str(err).splitlines()[0][:200] if str(err) else type(err).__name__

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(timed, jobs))
    latencies = [t for _, t, _ in results]
    failures = [m for ok, _, m in results if not ok]
    return {
        "sent": len(results),
        "served": len(results) - len(failures),
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "latency_median_s": round(statistics.median(latencies), 2),
        "latency_max_s": round(max(latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="generate requests per client")
    parser.add_argument("--uploads", type=int, default=8, help="simultaneous 36 MP uploads")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before the after-burst memory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="choi-load-"))
    photo = work / "phone.jpg"
    Image.fromarray(data.coffee()).resize((PHONE_SIDE, PHONE_SIDE), Image.BICUBIC).save(photo, quality=90)
    port = free_port()
    app = start_app(port, work / "outputs", work / "app.log")
    memory = MemorySampler(app.pid)
    memory.start()
    report: dict = {
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "python": platform.python_version(),
    }
    try:
        url = f"http://127.0.0.1:{port}/"
        clients = [Client(url, verbose=False) for _ in range(max(args.clients, args.uploads))]
        human, obj, bg = (
            handle_file(str(EXAMPLES / f"ride_bicycle_{r}.png")) for r in ("human", "object", "background")
        )

        def generate(job):
            client, seed = job
            # request: human, object, interaction, background, x1..y2; editor; settings (7); fixes (5)
            client.predict(human, obj, "ride bicycle", bg, 0.2, 0.2, 0.8, 0.9, None,
                           1, seed, 0, -1, 0, -1, "", None, None, None, None, "",
                           api_name="/generate_images")  # fmt: skip

        report["rss_start_mb"] = round(memory.rss() / 2**20)
        generate((clients[0], 12345))  # one warm-up request: the model's first run allocates its buffers for good
        report["rss_warm_mb"] = round(memory.rss() / 2**20)
        memory.mark()
        jobs = [(clients[c], 100 * c + r) for c in range(args.clients) for r in range(args.requests)]
        report["generate"] = burst(generate, jobs, args.clients)
        report["generate"]["rss_peak_mb"] = round(memory.mark() / 2**20)

        big = handle_file(str(photo))

        def upload(client):
            client.predict(big, api_name="/check_background")  # the background's upload check
            client.predict(big, None, None, None, None, api_name="/show_box")  # its box preview

        report["uploads"] = burst(upload, clients[: args.uploads], args.uploads)
        report["uploads"]["rss_peak_mb"] = round(memory.mark() / 2**20)
        time.sleep(args.settle)
        report["rss_after_burst_mb"] = round(memory.rss() / 2**20)
        report["outputs_mb"] = round(
            sum(f.stat().st_size for f in (work / "outputs").rglob("*") if f.is_file()) / 2**20, 1
        )
    finally:
        memory.running = False
        app.terminate()
        app.wait(30)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
