"""Bounded load test of `nosink serve` on loopback: errors, throughput against offline encode, latency.

    python benchmarks/server_load.py [--clients 32] [--requests 2000] [--layers 6] [--hidden 384] [--words 24]

Saves a random Llama (no download) with a word-level tokenizer to a temporary folder, times
``Encoder.encode`` on the texts offline, then starts ``nosink serve`` on 127.0.0.1 in its own
process and sends every text as its own ``/v1/embeddings`` request from ``--clients`` concurrent
clients. Reports errors, throughput (texts/s) for both and their ratio, p50/p99 latency, and the
largest difference between server and offline vectors. Client and server share this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import psutil
from common import VOCAB, save_random_llama

from nosink import Encoder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(
    url: str, texts: list[str], clients: int, per_request: int
) -> tuple[list[float], list[np.ndarray | None], float, float]:
    """Send every text once; latencies per request, vectors per text, wall and client CPU seconds."""
    requests = [list(range(i, min(i + per_request, len(texts)))) for i in range(0, len(texts), per_request)]
    latencies, vectors = [0.0] * len(requests), [None] * len(texts)
    cpu_start = time.process_time()
    gate = asyncio.Semaphore(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one(r: int) -> None:
            async with gate:
                start = time.perf_counter()
                body = {"input": [texts[i] for i in requests[r]], "encoding_format": "base64"}  # as the openai client
                answer = await client.post("/v1/embeddings", json=body)
                latencies[r] = time.perf_counter() - start
                if answer.status_code == 200:
                    for i, item in zip(requests[r], answer.json()["data"], strict=True):
                        vectors[i] = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")

        start = time.perf_counter()
        await asyncio.gather(*(one(r) for r in range(len(requests))))
        return latencies, vectors, time.perf_counter() - start, time.process_time() - cpu_start


def mean_batch_size(metrics: str) -> float:
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("nosink_batch_size_")
    }
    return values["nosink_batch_size_sum"] / max(values["nosink_batch_size_count"], 1)


def thread_times(pid: int) -> tuple[float, float]:
    """CPU seconds of the server's main thread (the event loop) and of all its other threads (the model)."""
    threads = psutil.Process(pid).threads()
    main = next(t for t in threads if t.id == pid)
    total = sum(t.user_time + t.system_time for t in threads)
    return main.user_time + main.system_time, total - main.user_time - main.system_time


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--words", type=int, default=24)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--server-args", default="", help="extra `nosink serve` flags, e.g. '--batch-wait-ms 5'")
    parser.add_argument("--plan", default="mask0&bidir:k=4,k0=1")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="server setting (default: its default)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    texts = [
        " ".join(f"w{i}" for i in rng.integers(2, VOCAB, rng.integers(args.words // 2, args.words + 1)))
        for _ in range(args.requests * args.texts_per_request)
    ]
    with tempfile.TemporaryDirectory() as folder:
        save_random_llama(folder, layers=args.layers, hidden=args.hidden)
        encoder = Encoder.from_pretrained(folder, plan=args.plan, device="cpu")
        start, cpu_start = time.perf_counter(), time.process_time()
        offline = encoder.encode(texts, normalize=True)
        offline_seconds, offline_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        del encoder

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "nosink.cli", "serve", "--model", folder, "--plan", args.plan]
        command += ["--port", str(port), "--device", "cpu"]
        command += args.server_args.split()
        if args.batch_wait_ms is not None:
            command += ["--batch-wait-ms", str(args.batch_wait_ms)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
        try:
            wait_healthy(url, server)
            before = thread_times(server.pid)
            latencies, vectors, seconds, client_cpu = asyncio.run(
                load(url, texts, args.clients, args.texts_per_request)
            )
            loop_cpu, model_cpu = (after - first for after, first in zip(thread_times(server.pid), before, strict=True))
            metrics = httpx.get(f"{url}/metrics").text
            batches = mean_batch_size(metrics)
            busy = next(float(x.split()[1]) for x in metrics.splitlines() if x.startswith("nosink_model_seconds_total"))
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=60)

    errors = sum(v is None for v in vectors)  # texts without a vector: their request failed
    worst = max(float(np.abs(v - offline[i]).max()) for i, v in enumerate(vectors) if v is not None)
    p50, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 99))
    print(f"random Llama L={args.layers} D={args.hidden}, plan {args.plan}, {len(texts)} texts of ~{args.words} words")
    print(f"offline encode : {len(texts) / offline_seconds:8.1f} texts/s ({offline_seconds:.1f} s)")
    shape = f"{len(latencies)} requests of {args.texts_per_request} text(s) from {args.clients} clients"
    print(f"server         : {len(texts) / seconds:8.1f} texts/s ({seconds:.1f} s), {shape}")
    print(f"ratio server/offline: {offline_seconds / seconds:.2f}")
    print(f"mean model batch {batches:.1f} texts; of {seconds:.1f} s the model was busy {busy:.1f} s", end="")
    print(f" and the clients used {client_cpu:.1f} s of CPU")
    print(
        f"CPU seconds: offline encode {offline_cpu:.1f}; server event loop {loop_cpu:.1f}, "
        f"model threads {model_cpu:.1f}; clients {client_cpu:.1f}; machine {os.cpu_count()} cores x {seconds:.1f} s"
    )
    print(f"errors: {errors}   latency p50 {p50:.1f} ms   p99 {p99:.1f} ms   max |server - offline| {worst:.1e}")


if __name__ == "__main__":
    main()
