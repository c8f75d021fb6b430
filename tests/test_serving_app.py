"""The HTTP API in front of a stand-in model: every response format, every bad input answered with its 4xx
in OpenAI's error shape (and the server serving on), a full queue's 503, the loading and draining health,
one log line per request, and clients that disconnect costing nothing."""
import logging
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench.serve_bench import multipart
from ds2.config import FeatureConfig, ServeConfig
from ds2.serving.app import Service, create_app
from ds2.serving.batcher import Batcher
from ds2.serving.recognizer import Recognized, Utterance

from .serving_helpers import LABELS, encoded, path_log_probs, spelled, tone

TEXT = "HELLO WORLD"
MODEL = "ds2-test"


class StandInModel:
    """The batcher's run(): every utterance 'says' TEXT; records the decoders asked for; can be held."""

    def __init__(self):
        self.runs = []
        self.entered = threading.Event()    # a batch reached the model
        self.release = threading.Event()    # clear it to hold batches in the model
        self.release.set()
        self.fail = False

    def __call__(self, utterances):
        self.entered.set()
        self.release.wait(60)   # held until the test releases it (bounded: a failing test still ends)
        self.runs.append([u.decoder for u in utterances])
        if self.fail:
            raise RuntimeError("the model broke")
        path, _ = spelled(TEXT)
        return [Recognized(TEXT, path_log_probs(path), len(utterances)) for _ in utterances]


def make_service(model, **settings):
    serve = ServeConfig(**{"max_wait_ms": 0.0, **settings})
    batcher = Batcher(model, max_batch_size=serve.max_batch_size, max_batch_frames=100_000,
                      max_wait=serve.max_wait_ms / 1000, max_queue=serve.max_queue)
    service = Service(MODEL, LABELS, 0.04, FeatureConfig(), serve,
                      {"greedy": "greedy (best path)", "lm": "LM beam search"}, "greedy", batcher)
    return service


@pytest.fixture
def model():
    return StandInModel()


@pytest.fixture
def service(model):
    service = make_service(model)
    service.batcher.start()
    service.ready = True
    yield service
    model.release.set()
    service.batcher.stop()


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


WAV = encoded(tone(1.0, 16000), 16000, "WAV")


def post(client, fields=None, files=None, **kwargs):
    fields = {"model": MODEL, **(fields or {})}
    files = {"file": ("speech.wav", WAV, "audio/wav")} if files is None else files
    return client.post("/v1/audio/transcriptions", data=fields, files=files, **kwargs)


def openai_error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def test_every_response_format(client):
    assert post(client).json() == {"text": TEXT}
    text = post(client, {"response_format": "text"})
    assert text.text == TEXT + "\n" and text.headers["content-type"].startswith("text/plain")
    verbose = post(client, {"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]})
    body = verbose.json()
    assert body["text"] == TEXT and [w["word"] for w in body["words"]] == ["HELLO", "WORLD"]
    assert abs(body["duration"] - 1.0) < 1e-6 and body["segments"][0]["text"] == TEXT
    srt = post(client, {"response_format": "srt"}).text
    assert srt.startswith("1\n00:00:00,") and f"\n{TEXT}\n" in srt
    vtt = post(client, {"response_format": "vtt"})
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.") and vtt.headers["content-type"].startswith("text/vtt")


def test_language_prompt_temperature_and_openai_s_model_name_are_accepted(client):
    response = post(client, {"language": "en", "prompt": "a greeting", "temperature": "0.2"})
    assert response.json() == {"text": TEXT}
    assert post(client, {"model": "whisper-1"}).status_code == 200


def test_a_request_may_choose_its_decoder(client, model):
    post(client)
    post(client, {"decoder": "lm"})
    assert model.runs == [["greedy"], ["lm"]]


def test_every_bad_input_gets_its_4xx_and_the_server_serves_on(client):
    wav = ("speech.wav", WAV, "audio/wav")
    openai_error(post(client, files={}), 422, "file")
    openai_error(client.post("/v1/audio/transcriptions", files={"file": wav}), 422, "model")
    openai_error(client.post("/v1/audio/transcriptions", json={"model": MODEL}), 422)
    openai_error(post(client, {"model": "gpt-4o-transcribe"}), 404, "model", "model_not_found")
    openai_error(post(client, {"response_format": "xml"}), 400, "response_format")
    openai_error(post(client, {"language": "de"}), 400, "language", "unsupported_language")
    openai_error(post(client, {"decoder": "oracle"}), 400, "decoder")
    openai_error(post(client, {"temperature": "hot"}), 422, "temperature")
    openai_error(post(client, {"timestamp_granularities[]": "char"}), 400, "timestamp_granularities[]")
    openai_error(post(client, files={"file": ("notes.txt", b"dear diary", "text/plain")}), 415, "file",
                 "unsupported_audio")
    openai_error(post(client, files={"file": ("empty.wav", b"", "audio/wav")}), 400, "file", "empty_file")
    flac = encoded(tone(2.0, 16000), 16000, "FLAC")
    openai_error(post(client, files={"file": ("cut.flac", flac[:2000], "audio/flac")}), 400, "file",
                 "unreadable_audio")
    openai_error(client.get("/v1/nothing"), 404)
    openai_error(client.get("/v1/audio/transcriptions"), 405)
    assert post(client).json() == {"text": TEXT}


def test_too_long_and_too_large_get_413(model):
    service = make_service(model, max_upload_mb=0.05, max_audio_seconds=2.0)
    service.batcher.start()
    service.ready = True
    client = TestClient(create_app(service))
    openai_error(post(client, files={"file": ("long.wav", encoded(tone(3.0, 8000), 8000, "WAV"), "audio/wav")}),
                 413, "file", "audio_too_long")
    large = encoded(tone(2.0, 16000), 16000, "WAV")       # 64 KB, over 0.05 MB
    openai_error(post(client, files={"file": ("large.wav", large, "audio/wav")}), 413, "file", "file_too_large")

    def chunks():   # no Content-Length: cut off while reading
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\n"
        for _ in range(20):
            yield bytes(8192)

    streamed = client.post("/v1/audio/transcriptions", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    openai_error(streamed, 413, "file", "file_too_large")
    assert post(client).json() == {"text": TEXT}
    service.batcher.stop()


def test_loading_then_ready_then_draining(model):
    service = make_service(model)
    client = TestClient(create_app(service))
    health = client.get("/health")
    assert health.status_code == 503 and health.json() == {"status": "loading"} and health.headers["retry-after"]
    loading = post(client)
    openai_error(loading, 503, code="model_loading")
    assert loading.headers["retry-after"] == "5"
    service.batcher.start()
    service.ready = True
    assert client.get("/health").json() == {"status": "ready", "model": MODEL}
    service.draining = True
    assert client.get("/health").status_code == 503
    service.batcher.stop()


def test_a_full_queue_answers_503_with_retry_after(model):
    service = make_service(model, max_queue=2, max_batch_size=1)
    service.batcher.start()
    service.ready = True
    model.release.clear()
    client = TestClient(create_app(service))
    # One request runs (held in the model), two wait: the queue is full.
    utterance = Utterance(np.zeros((161, 10), np.float32), "greedy")
    held = [service.batcher.submit(10, utterance)]
    wait_for(model.entered.is_set)
    held += [service.batcher.submit(10, utterance) for _ in range(2)]
    busy = post(client)
    openai_error(busy, 503, code="queue_full")
    assert int(busy.headers["retry-after"]) >= 1
    model.release.set()
    for future in held:
        future.result(5)
    assert post(client).json() == {"text": TEXT}
    service.batcher.stop()


def test_a_failing_model_answers_500_without_a_traceback(client, model):
    model.fail = True
    error = openai_error(post(client), 500, code="model_error")
    assert "req_" in error["message"]
    model.fail = False
    assert post(client).json() == {"text": TEXT}


def test_models_and_the_page(client):
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [MODEL]
    assert listed["data"][0]["object"] == "model" and listed["data"][0]["default_decoder"] == "greedy"
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    openai_error(client.get("/v1/models/other"), 404, "model", "model_not_found")
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "v1/audio/transcriptions" in page.text and "getUserMedia" in page.text


def test_one_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="ds2.serve")
    response = post(client, {"decoder": "lm"})
    post(client, {"response_format": "xml"})
    client.get("/health")
    client.get("/v1/models")
    lines = [r.getMessage() for r in caplog.records if r.name == "ds2.serve"]
    assert len(lines) == 3, lines      # health checks are not logged
    request_id = response.headers["x-request-id"]
    assert lines[0].startswith(f"{request_id} POST /v1/audio/transcriptions 200 1.00 s audio ")
    assert "s latency decoder lm batch 1" in lines[0]
    assert " 400 " in lines[1] and lines[2].split()[1:4] == ["GET", "/v1/models", "200"]


# ---------------------------------------------------------------------------------------------
# Over a real socket: clients that leave


@pytest.fixture
def live(service):
    """(host, port) of the app served by uvicorn in a thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(10)


def raw_request(address, body, content_type, send=None):
    """A socket that sent the request's head and `send` bytes of its body (all when None)."""
    conn = socket.create_connection(address, timeout=10)
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    conn.sendall(head + body[:send])
    return conn


def log_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "ds2.serve"]


def wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_gone_mid_upload_costs_nothing(live, model, caplog):
    caplog.set_level(logging.INFO, logger="ds2.serve")
    body, content_type = multipart([("model", MODEL.encode(), None), ("file", WAV, "speech.wav")])
    conn = raw_request(live, body, content_type, send=len(body) // 2)
    time.sleep(0.2)
    conn.close()
    wait_for(lambda: any(" 499 " in line for line in log_lines(caplog)))
    assert model.runs == []
    full = raw_request(live, body, content_type)
    assert full.recv(65536).startswith(b"HTTP/1.1 200")
    full.close()
    assert model.runs == [["greedy"]]


def test_a_client_gone_while_queued_is_never_run(live, service, model, caplog):
    caplog.set_level(logging.INFO, logger="ds2.serve")
    model.release.clear()
    body, content_type = multipart([("model", MODEL.encode(), None), ("file", WAV, "speech.wav")])
    running = raw_request(live, body, content_type)        # held in the model
    wait_for(model.entered.is_set)
    leaving = raw_request(live, body, content_type)        # waits behind it
    wait_for(lambda: len(service.batcher.waiting) == 1)
    leaving.close()
    wait_for(lambda: any(" 499 " in line for line in log_lines(caplog)))
    model.release.set()
    assert running.recv(65536).startswith(b"HTTP/1.1 200")
    running.close()
    wait_for(lambda: service.batcher.batches >= 1)
    time.sleep(0.2)
    assert model.runs == [["greedy"]]        # the second request never reached the model
