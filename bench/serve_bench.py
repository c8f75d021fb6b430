"""Serving benchmark: `ds2 serve` under N concurrent clients against the same requests sent one at a time.

    python bench/serve_bench.py --preset small --checkpoint best --clients 16     # make bench-serve

Starts `ds2 serve` on a loopback port (its default settings, plus any --set), waits until it is ready, then
sends the test split's files (the first --requests of them) --repeats times, each time once one at a time
and once from --clients concurrent clients, so both modes see the same machine load (alternated, side by side).
Every request must be answered 200; each is counted, and the server's log must hold one line for each.
Bounded: --requests per pass, and no new request after --max-seconds in a pass.

Reports, per mode: utterances per second (requests / the pass's wall time), real-time factor (the pass's
wall time / the audio seconds it transcribed: below 1 is faster than real time), latency p50 / p95 / p99
(request sent to answer read, upload included), and the throughput ratio concurrent / one at a time.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

MODEL_ANY = "whisper-1"     # a name every ds2 server accepts besides its own


# ---------------------------------------------------------------------------------------------
# A small HTTP client (the standard library's): what the benchmark and the tests send


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(fields: Sequence[Tuple[str, bytes, Optional[str]]], boundary: str = "ds2boundary") -> Tuple[bytes, str]:
    """(body, content type) of a multipart form: (name, value, file name or None) per field."""
    parts = []
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(port: int, method: str, path: str, body: bytes = None, headers: Dict[str, str] = None,
            timeout: float = 120) -> Tuple[int, str]:
    """(status, body text) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def transcription_request(audio: bytes, name: str = "audio", model: str = MODEL_ANY) -> Tuple[bytes, Dict[str, str]]:
    body, content_type = multipart([("model", model.encode(), None), ("file", audio, name)])
    return body, {"Content-Type": content_type}


def transcribe(port: int, audio: bytes, name: str = "audio", model: str = MODEL_ANY) -> Tuple[int, str]:
    body, headers = transcription_request(audio, name, model)
    return request(port, "POST", "/v1/audio/transcriptions", body, headers)


def wait_ready(port: int, process: subprocess.Popen, seconds: float) -> List[Optional[int]]:
    """Poll GET /health until 200; the distinct statuses seen on the way (None: connection refused).
    RuntimeError if the server exits or is not ready in time."""
    seen: List[Optional[int]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before it was ready")
        try:
            status, _ = request(port, "GET", "/health", timeout=5)
        except OSError:
            status = None
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready after {seconds:.0f} s (health: {seen})")


# ---------------------------------------------------------------------------------------------
# The benchmark


def run_pass(port: int, uploads: List[Tuple[bytes, float]], clients: int, max_seconds: float) -> Dict:
    """Send every upload (audio bytes, seconds) from `clients` concurrent clients; their figures."""
    next_index = iter(range(len(uploads)))
    lock = threading.Lock()
    latencies, statuses, audio_seconds = [], [], []
    started = time.perf_counter()

    def client():
        while True:
            with lock:
                index = next(next_index, None)
            if index is None or time.perf_counter() - started > max_seconds:
                return
            audio, seconds = uploads[index]
            sent = time.perf_counter()
            try:
                status, _ = transcribe(port, audio, f"utterance-{index}")
            except OSError as exc:
                status = f"{type(exc).__name__}"
            with lock:
                latencies.append(time.perf_counter() - sent)
                statuses.append(status)
                audio_seconds.append(seconds)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    answered = statuses.count(200)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0.0, 0.0, 0.0)
    return {"clients": clients, "requests": len(statuses), "answered_200": answered, "latencies": latencies,
            "other_statuses": sorted({str(s) for s in statuses if s != 200}),
            "wall_seconds": round(wall, 3), "audio_seconds": round(sum(audio_seconds), 3),
            "utterances_per_second": round(len(statuses) / wall, 3) if wall else 0.0,
            "real_time_factor": round(wall / sum(audio_seconds), 4) if audio_seconds else 0.0,
            "latency_p50": round(float(p50), 3), "latency_p95": round(float(p95), 3),
            "latency_p99": round(float(p99), 3)}


def combine(passes: List[Dict]) -> Dict:
    """Several passes of one mode as one: totals, and latency percentiles over all their requests."""
    wall = sum(p["wall_seconds"] for p in passes)
    audio = sum(p["audio_seconds"] for p in passes)
    requests = sum(p["requests"] for p in passes)
    p50, p95, p99 = np.percentile([latency for p in passes for latency in p["latencies"]], [50, 95, 99])
    return {"clients": passes[0]["clients"], "passes": len(passes), "requests": requests,
            "answered_200": sum(p["answered_200"] for p in passes),
            "utterances_per_second": round(requests / wall, 3), "real_time_factor": round(wall / audio, 4),
            "latency_p50": round(float(p50), 3), "latency_p95": round(float(p95), 3),
            "latency_p99": round(float(p99), 3)}


def format_table(sequential: Dict, concurrent: Dict) -> str:
    rows = [("one at a time", sequential), (f"{concurrent['clients']} concurrent", concurrent)]
    lines = [f"{'mode':<16}{'requests':>9}{'answered':>9}{'utt/s':>8}{'RTF':>8}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}"]
    for name, figures in rows:
        lines.append(f"{name:<16}{figures['requests']:>9}{figures['answered_200']:>9}"
                     f"{figures['utterances_per_second']:>8.2f}{figures['real_time_factor']:>8.3f}"
                     f"{figures['latency_p50']:>8.3f}{figures['latency_p95']:>8.3f}{figures['latency_p99']:>8.3f}")
    ratio = concurrent["utterances_per_second"] / sequential["utterances_per_second"]
    lines.append(f"throughput, {concurrent['clients']} concurrent clients / one at a time: {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> int:
    from ds2.config import add_options, from_options
    from ds2.data.sets import read_split
    from ds2.errors import UserError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--checkpoint", default="best", help="checkpoint to serve (default: best)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=64, help="requests per pass (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each mode, alternated (default 3)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="no new request after this long in a pass")
    parser.add_argument("--ready-seconds", type=float, default=600.0, help="how long the server may take to start")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    try:
        cfg = from_options(args)
        utterances = read_split(cfg, "test")[:args.requests]
    except UserError as exc:
        print(f"serve_bench: {exc}", file=sys.stderr)
        return 1
    uploads = [(Path(u.audio_path).read_bytes(), u.duration) for u in utterances]

    port = free_port()
    command = [sys.executable, "-m", "ds2", "serve", "--preset", args.preset, "--checkpoint", args.checkpoint,
               "--port", str(port)] + (["--config", args.config] if args.config else []) + \
        [item for override in args.overrides for item in ("--set", override)]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-bench-{port}.log"
    with open(log_path, "w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            wait_ready(port, server, args.ready_seconds)
            print(f"server ready in {time.monotonic() - started:.1f} s; {len(uploads)} test utterances "
                  f"({sum(s for _, s in uploads):.1f} s of audio) per pass, {args.repeats} passes of each mode",
                  flush=True)
            passes: Dict[str, List[Dict]] = {"sequential": [], "concurrent": []}
            for repeat in range(args.repeats):
                for mode, clients in (("sequential", 1), ("concurrent", args.clients)):
                    figures = run_pass(port, uploads, clients, args.max_seconds)
                    passes[mode].append(figures)
                    print(f"pass {repeat + 1}, {mode}: {figures['requests']} requests, "
                          f"{figures['utterances_per_second']:.2f} utt/s, p95 {figures['latency_p95']:.3f} s",
                          flush=True)
        except RuntimeError as exc:
            print(f"serve_bench: {exc}; server log: {log_path}", file=sys.stderr)
            return 1
        finally:
            server.send_signal(signal.SIGTERM)
            exit_status = server.wait(120)
        log.seek(0)
        logged = sum(1 for line in log if " POST /v1/audio/transcriptions " in line)

    sequential, concurrent = combine(passes["sequential"]), combine(passes["concurrent"])
    sent = sequential["requests"] + concurrent["requests"]
    answered = sequential["answered_200"] + concurrent["answered_200"]
    print(format_table(sequential, concurrent))
    print(f"requests: {sent} sent, {answered} answered 200, {logged} in the server's log; server exit {exit_status}")
    for mode_passes in passes.values():
        for figures in mode_passes:
            figures["latencies"] = [round(latency, 4) for latency in figures["latencies"]]
    result = {"command": " ".join(sys.argv), "checkpoint": args.checkpoint, "settings": vars(cfg.serve),
              "sequential": sequential, "concurrent": concurrent, "passes": passes,
              "throughput_ratio": round(concurrent["utterances_per_second"] / sequential["utterances_per_second"], 3),
              "requests_sent": sent, "requests_answered": answered, "requests_logged": logged,
              "server_exit": exit_status}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    everything_answered = answered == sent == logged and exit_status == 0
    if not everything_answered:
        print("serve_bench: not every request was answered 200 and logged once; see the server log "
              f"{log_path}", file=sys.stderr)
    return 0 if everything_answered else 1


if __name__ == "__main__":
    sys.exit(main())
