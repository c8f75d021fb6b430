"""`ds2 serve` as users run it: the Compose service `serve` from the image, healthy as the image's non-root
user, transcribing test-split files through the official OpenAI client, curl and the page in headless
Chromium, each transcript equal to `ds2 eval`'s for the same file and decoder; bad inputs get their 4xx and
the server serves on; `docker compose stop` lets it drain and stop cleanly."""
import json
import os
import shutil
import socket
import subprocess
import time
import wave

import pytest

from .conftest import REPO, run

# A run small enough for a test (as test_pipeline's): the stages run for real, the model learns a little.
TINY = ("--set data.synth_train=48 --set data.synth_dev=8 --set data.synth_test=8 "
        "--set train.epochs=1 --set train.checkpoint_every=2")
MODEL = "ds2-small"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose(env, *args, timeout=900):
    return run(["docker", "compose", *args], env=env, timeout=timeout)


def health_of(env) -> str:
    """The serve container's health (starting, healthy, unhealthy), or its state once it is not running."""
    container = compose(env, "ps", "-aq", "serve").stdout.strip()
    result = run(["docker", "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", container])
    state, _, health = result.stdout.strip().partition(" ")
    return health if state == "running" else state


@pytest.fixture(scope="module")
def served(image, tmp_path_factory):
    """(base URL, {host audio path: eval's greedy transcript}, compose env) of a running `serve` service."""
    runs_dir = tmp_path_factory.mktemp("serve-runs")
    runs_dir.chmod(0o755)   # pytest makes it private; the server runs as the image's user, as in a checkout
    port = free_port()
    env = {**os.environ, "DS2_RUNS": str(runs_dir), "DS2_IMAGE_CPU": image, "DS2_ARGS": TINY,
           "COMPOSE_PROJECT_NAME": f"ds2serve{os.getpid()}", "DS2_SERVE_PORT": str(port)}
    try:
        up = compose(env, "up", "--no-build", "--exit-code-from", "train", "train", timeout=1500)
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        ev = compose(env, "run", "--rm", "eval", timeout=600)
        assert ev.returncode == 0, (ev.stdout + ev.stderr)[-4000:]
        hypotheses = {json.loads(line)["id"]: json.loads(line)["hyp"]
                      for line in (runs_dir / "small" / "eval" / "test_greedy.jsonl").read_text().splitlines()}
        manifest = json.loads((runs_dir / "data" / "manifests" / "test.json").read_text())
        expected = {str(runs_dir / "data" / s["wav_path"]): hypotheses[s["id"]] for s in manifest["samples"]}
        assert len(expected) == 8 and any(expected.values()), "eval decoded nothing: the comparisons show nothing"

        start = compose(env, "up", "-d", "--no-build", "serve")
        assert start.returncode == 0, start.stderr
        deadline = time.monotonic() + 600
        while (health := health_of(env)) != "healthy":
            assert health in ("starting", "created"), f"{health}: " + compose(env, "logs", "serve").stdout[-4000:]
            assert time.monotonic() < deadline, compose(env, "logs", "serve").stdout[-4000:]
            time.sleep(2)
        yield f"http://127.0.0.1:{port}", expected, env
    finally:
        compose(env, "down", "--remove-orphans", "--timeout", "60")
        shutil.rmtree(runs_dir, ignore_errors=True)


def test_the_service_is_healthy_as_the_image_s_non_root_user(served):
    import requests

    url, _, env = served
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ready", "model": MODEL}
    user = compose(env, "exec", "-T", "serve", "id", "-un")
    assert user.stdout.strip() == "ds2", user.stdout + user.stderr
    processes = compose(env, "top", "serve").stdout
    assert "ds2 serve" in processes or "-m ds2 serve" in processes, processes


def test_the_openai_client_transcribes_as_eval_does(served):
    from openai import OpenAI

    url, expected, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    for path, text in expected.items():
        with open(path, "rb") as audio:
            assert client.audio.transcriptions.create(model=MODEL, file=audio).text == text, path
    path, text = next((p, t) for p, t in expected.items() if t.strip())
    with open(path, "rb") as audio:
        verbose = client.audio.transcriptions.create(model=MODEL, file=audio, response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
    assert verbose.text == text and " ".join(w.word for w in verbose.words) == " ".join(text.split())
    assert all(0 <= w.start < w.end <= verbose.duration + 0.05 for w in verbose.words)
    with open(path, "rb") as audio:
        srt = client.audio.transcriptions.create(model=MODEL, file=audio, response_format="srt")
    assert srt.startswith("1\n00:00:") and text.split()[0] in srt


def test_curl_transcribes_as_eval_does(served):
    url, expected, _ = served
    for path, text in expected.items():
        result = run(["curl", "-sS", "--fail-with-body", "-F", f"file=@{path}", "-F", f"model={MODEL}",
                      f"{url}/v1/audio/transcriptions"], timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout) == {"text": text}, path
    path, text = next(iter(expected.items()))
    plain = run(["curl", "-sS", "-F", f"file=@{path}", "-F", f"model={MODEL}", "-F", "response_format=text",
                 f"{url}/v1/audio/transcriptions"], timeout=120)
    assert plain.stdout == text + "\n"


def test_bad_inputs_get_their_4xx_and_the_server_serves_on(served, tmp_path):
    import requests

    url, expected, env = served
    endpoint = f"{url}/v1/audio/transcriptions"
    path, text = next(iter(expected.items()))
    audio = open(path, "rb").read()

    def status(files=None, data=None):
        response = requests.post(endpoint, files=files, data=data, timeout=120)
        assert "error" in response.json() and "Traceback" not in response.text
        return response.status_code

    assert status({"file": ("notes.txt", b"just text")}, {"model": MODEL}) == 415
    assert status({"file": ("cut.flac", audio[:len(audio) // 3])}, {"model": MODEL}) == 400
    assert status(None, {"model": MODEL}) == 422
    assert status({"file": ("a.flac", audio)}, None) == 422
    assert status({"file": ("a.flac", audio)}, {"model": MODEL, "response_format": "docx"}) == 400
    assert status({"file": ("big.wav", bytes(26 * 1024 * 1024))}, {"model": MODEL}) == 413
    silence = tmp_path / "long.wav"     # 301 s, over the default 300 s limit
    with wave.open(str(silence), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(2 * 301 * 8000))
    assert status({"file": ("long.wav", silence.read_bytes())}, {"model": MODEL}) == 413
    # A client that leaves in the middle of its upload.
    head = (f'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n{MODEL}\r\n--b\r\n'
            f'Content-Disposition: form-data; name="file"; filename="a.flac"\r\n\r\n').encode()
    conn = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    length = len(head) + len(audio) + len(b"\r\n--b--\r\n")
    conn.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                 f"Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode() + head + audio[:len(audio) // 2])
    time.sleep(0.5)
    conn.close()
    answer = requests.post(endpoint, files={"file": ("a.flac", audio)}, data={"model": MODEL}, timeout=120)
    assert answer.status_code == 200 and answer.json() == {"text": text}
    assert health_of(env) == "healthy"


def test_the_page_transcribes_an_upload_and_a_recording_in_headless_chromium(served, tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("the page's test drives Debian's Chromium: apt-get install chromium chromium-driver "
                    "(.ci/run does)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, expected, _ = served
    path, text = next((p, t) for p, t in expected.items() if t.strip())
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic",
                 # The microphone: Chromium's fake device (a beep), allowed without asking.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")     # the driver is given: Selenium must not look for one
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "model").text.startswith(MODEL))
        driver.find_element(By.ID, "file").send_keys(path)
        driver.find_element(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "transcript").text)
        driver.save_screenshot(str(tmp_path / "upload.png"))
        assert driver.find_element(By.ID, "transcript").text == text
        assert "error" not in driver.find_element(By.ID, "status").get_attribute("class")

        driver.find_element(By.ID, "record").click()
        wait.until(lambda d: "Recording" in d.find_element(By.ID, "status").text)
        time.sleep(2)
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("recording.wav:"))
        status = driver.find_element(By.ID, "status")
        assert "error" not in status.get_attribute("class") and " s of audio" in status.text
        assert driver.find_element(By.ID, "transcript").text     # a transcript, or "(no words heard)"
    finally:
        driver.quit()


def test_stop_drains_and_ends_cleanly(served):
    _, _, env = served
    stop = compose(env, "stop", "--timeout", "60", "serve", timeout=120)
    assert stop.returncode == 0, stop.stderr
    logs = compose(env, "logs", "--no-color", "serve").stdout
    assert "signal 15" in logs and "ds2 serve: stopped" in logs and "Traceback" not in logs, logs[-4000:]
    state = run(["docker", "inspect", "--format", "{{.State.ExitCode}}",
                 compose(env, "ps", "-aq", "serve").stdout.strip()])
    assert state.stdout.strip() == "0"
    # Every request above was logged, with its status: answered, refused with a 4xx, or its client gone.
    statuses = [line.split(" POST /v1/audio/transcriptions ")[1].split()[0] for line in logs.splitlines()
                if " POST /v1/audio/transcriptions " in line]
    assert statuses and set(statuses) <= {"200", "400", "413", "415", "422", "499"}, statuses
    assert statuses.count("200") >= 2 * 8 + 3 and "499" in statuses


def test_compose_serve_is_declared_with_port_and_healthcheck():
    config = run(["docker", "compose", "config", "--format", "json"], cwd=REPO)
    assert config.returncode == 0, config.stderr
    serve = json.loads(config.stdout)["services"]["serve"]
    assert serve["user"] == "ds2" and serve["ports"][0]["target"] == 8000 and serve["healthcheck"]["test"]
    assert all(v.get("read_only") for v in serve["volumes"])
