"""`ds2 serve` as a process: not ready until its graph is compiled, transcripts equal to `ds2 eval`'s for the
same files and decoder (concurrent requests batched together), and SIGTERM lets a request in flight finish."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("mindspore")

from bench.serve_bench import free_port, transcribe, wait_ready  # noqa: E402
from ds2.__main__ import main  # noqa: E402
from tests.helpers import tiny_overrides, write_tone_corpus  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    manifests = write_tone_corpus(root / "corpus")
    overrides = tiny_overrides(root / "run", root / "data", manifests, **{"train.epochs": 2})
    assert main(["train"] + overrides) == 0
    assert main(["eval", "--checkpoint", "last", "--split", "test", "--no-lm"] + overrides) == 0
    hypotheses = {json.loads(line)["id"]: json.loads(line)["hyp"]
                  for line in (root / "run" / "eval" / "test_greedy.jsonl").read_text().splitlines()}
    samples = json.loads(manifests["test"].read_text())["samples"]
    return root, overrides, {s["wav_path"]: hypotheses[s["id"]] for s in samples}


def test_serve_answers_what_eval_decodes_and_drains_on_sigterm(trained):
    root, overrides, expected = trained
    port = free_port()
    # Requests wait up to 3 s for others: the concurrent ones below run as one batch, and the last one is
    # still waiting when SIGTERM arrives.
    command = [sys.executable, "-m", "ds2", "serve", "--checkpoint", "last", "--port", str(port), "--no-lm",
               "--set", "serve.max_wait_ms=3000"] + overrides
    log = open(root / "serve.log", "w+")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GLOG_v": "3"})
    try:
        seen = wait_ready(port, server, seconds=180)
        assert seen[-1] == 200 and set(seen) <= {None, 503, 200}

        def answer(path):
            return transcribe(port, Path(path).read_bytes())

        answers = {}
        threads = [threading.Thread(target=lambda p=path: answers.__setitem__(p, answer(p))) for path in expected]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert {p: (200, json.dumps({"text": text})) for p, text in expected.items()} == \
            {p: (status, body) for p, (status, body) in answers.items()}
        assert any(expected.values()), "eval decoded nothing: the comparison shows nothing"

        in_flight = {}
        path = next(iter(expected))
        thread = threading.Thread(target=lambda: in_flight.update(answer=answer(path)))
        thread.start()
        time.sleep(1.0)      # time for the server to accept it; it then waits in the queue up to 3 s
        server.send_signal(signal.SIGTERM)
        thread.join(60)
        assert in_flight["answer"] == (200, json.dumps({"text": expected[path]}))
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    log.seek(0)
    output = log.read()
    lines = [line for line in output.splitlines() if " POST /v1/audio/transcriptions " in line]
    assert len(lines) == len(expected) + 1 and all(" 200 " in line and "decoder greedy" in line for line in lines)
    assert max(int(line.rsplit("batch ", 1)[1]) for line in lines) > 1, output
    assert "signal 15" in output and "ds2 serve: stopped" in output and "Traceback" not in output
