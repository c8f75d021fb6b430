import functools
import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest
import soundfile

from ds2.config import DEFAULT_LABELS
from ds2.data import manifest
from ds2.data.librispeech import (ChecksumError, LibriSpeechError, UnsafeArchiveError, download, expected_md5,
                                  find_subset, prepare_subset, safe_extract, scan_subset)

SUBSET = "dev-clean"
TRANSCRIPTS = {"19-198-0000": "HELLO WORLD", "19-198-0001": "IT'S A CAT"}


def build_librispeech_tar(directory):
    """A two-utterance dev-clean.tar.gz laid out like the official archive."""
    chapter = directory / "src" / "LibriSpeech" / SUBSET / "19" / "198"
    chapter.mkdir(parents=True)
    for index, utterance_id in enumerate(TRANSCRIPTS):
        soundfile.write(chapter / f"{utterance_id}.flac", np.full(8000 * (index + 1), 0.1), 16000)
    (chapter / "19-198.trans.txt").write_text("".join(f"{k} {v}\n" for k, v in TRANSCRIPTS.items()))
    (directory / "src" / "LibriSpeech" / "README.TXT").write_text("tiny LibriSpeech\n")
    served = directory / "served"
    served.mkdir()
    archive = served / f"{SUBSET}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory / "src" / "LibriSpeech", arcname="LibriSpeech")
    return archive


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (http.server has none); behaviour set per test."""

    def do_GET(self):
        state = self.server.state
        state["requests"].append(self.headers.get("Range"))
        try:
            data = open(self.translate_path(self.path), "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        requested = self.headers.get("Range")
        if requested and state["honour_range"]:
            start = int(requested.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if state["cut_after"] is not None:  # simulate a dropped connection
            body, state["cut_after"] = body[:state["cut_after"]], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    archive = build_librispeech_tar(tmp_path)
    handler = functools.partial(RangeHandler, directory=str(archive.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.state = {"requests": [], "honour_range": True, "cut_after": None}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_port}", "state": httpd.state, "archive": archive,
           "md5": hashlib.md5(archive.read_bytes()).hexdigest()}
    httpd.shutdown()
    httpd.server_close()


def test_download_verify_extract_and_scan(tmp_path, server):
    root = tmp_path / "data"
    subset_dir = prepare_subset(root, SUBSET, base_url=server["url"], md5=server["md5"])
    assert subset_dir == root / "LibriSpeech" / SUBSET
    assert (root / "LibriSpeech" / "README.TXT").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["LibriSpeech"]  # archive and staging removed

    utterances, report = scan_subset(subset_dir, DEFAULT_LABELS)
    assert report.total == 0
    assert {u.id: (u.text, u.duration, u.speaker) for u in utterances} == {
        "19-198-0000": ("HELLO WORLD", 0.5, "19"), "19-198-0001": ("IT'S A CAT", 1.0, "19")}


def test_existing_copy_is_used_without_downloading(tmp_path, server):
    safe_extract(server["archive"], tmp_path / "mounted")
    assert prepare_subset(tmp_path / "mounted", SUBSET, base_url=server["url"]) == \
        tmp_path / "mounted" / "LibriSpeech" / SUBSET
    # the LibriSpeech directory itself may be given as the root, too
    assert find_subset(tmp_path / "mounted" / "LibriSpeech", SUBSET) == tmp_path / "mounted" / "LibriSpeech" / SUBSET
    assert server["state"]["requests"] == []


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server):
    size = server["archive"].stat().st_size
    destination = tmp_path / f"{SUBSET}.tar.gz"
    server["state"]["cut_after"] = size // 2
    with pytest.raises(LibriSpeechError, match="run again to resume"):
        download(f"{server['url']}/{SUBSET}.tar.gz", destination, server["md5"])
    part = tmp_path / f"{SUBSET}.tar.gz.part"
    assert part.stat().st_size == size // 2 and not destination.exists()

    download(f"{server['url']}/{SUBSET}.tar.gz", destination, server["md5"])
    assert server["state"]["requests"] == [None, f"bytes={size // 2}-"]
    assert destination.read_bytes() == server["archive"].read_bytes() and not part.exists()


def test_server_ignoring_range_starts_over(tmp_path, server):
    server["state"]["honour_range"] = False
    (tmp_path / f"{SUBSET}.tar.gz.part").write_bytes(b"stale bytes")
    destination = download(f"{server['url']}/{SUBSET}.tar.gz", tmp_path / f"{SUBSET}.tar.gz", server["md5"])
    assert destination.read_bytes() == server["archive"].read_bytes()


def test_complete_partial_file_is_verified_after_a_416(tmp_path, server):
    (tmp_path / f"{SUBSET}.tar.gz.part").write_bytes(server["archive"].read_bytes())
    download(f"{server['url']}/{SUBSET}.tar.gz", tmp_path / f"{SUBSET}.tar.gz", server["md5"])
    assert (tmp_path / f"{SUBSET}.tar.gz").read_bytes() == server["archive"].read_bytes()


def test_bad_checksum_is_rejected_and_the_download_discarded(tmp_path, server):
    with pytest.raises(ChecksumError):
        prepare_subset(tmp_path / "data", SUBSET, base_url=server["url"], md5="0" * 32)
    assert list((tmp_path / "data").iterdir()) == []


def test_an_archive_that_fails_its_checksum_is_moved_aside_and_fetched_afresh(tmp_path, server):
    root = tmp_path / "data"
    root.mkdir()
    (root / f"{SUBSET}.tar.gz").write_bytes(b"an old, broken download")
    with pytest.raises(LibriSpeechError, match="refused: its MD5 does not match.*run again to download"):
        prepare_subset(root, SUBSET, base_url=server["url"], md5=server["md5"])
    assert (root / f"{SUBSET}.tar.gz.rejected").read_bytes() == b"an old, broken download"
    assert not (root / f"{SUBSET}.tar.gz").exists()
    assert prepare_subset(root, SUBSET, base_url=server["url"], md5=server["md5"]) == root / "LibriSpeech" / SUBSET


def test_an_unsafe_archive_is_moved_aside_with_what_to_do(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    evil = tar_with(tmp_path, regular("LibriSpeech/ok.txt"), regular("../escaped.txt"))
    (root / f"{SUBSET}.tar.gz").write_bytes(evil.read_bytes())
    with pytest.raises(LibriSpeechError, match="refused: .*'\\.\\./escaped.txt'.*data.librispeech_url"):
        prepare_subset(root, SUBSET, md5=hashlib.md5(evil.read_bytes()).hexdigest())
    assert (root / f"{SUBSET}.tar.gz.rejected").is_file() and not (root / f"{SUBSET}.tar.gz").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_checksum_sources_in_order(tmp_path):
    archive = tmp_path / f"{SUBSET}.tar.gz"
    assert expected_md5(SUBSET, archive) == ("42e2234ba48799c1f50f24a7926300a1",
                                              "the official OpenSLR checksum table")
    (tmp_path / f"{SUBSET}.tar.gz.md5").write_text("ABCDEF  dev-clean.tar.gz\n")
    assert expected_md5(SUBSET, archive)[0] == "abcdef"
    assert expected_md5(SUBSET, archive, given="123")[0] == "123"
    assert expected_md5("my-subset", tmp_path / "my-subset.tar.gz")[0] is None


def test_unknown_subset_is_refused(tmp_path):
    with pytest.raises(LibriSpeechError, match="unknown LibriSpeech subset"):
        prepare_subset(tmp_path, "train-clean-999")


def tar_with(tmp_path, *members):
    """A tar.gz holding the given (TarInfo, bytes or None) members."""
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def regular(name, data=b"x"):
    return tarfile.TarInfo(name), data


def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def device(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info, None


@pytest.mark.parametrize("members", [
    [regular("../escaped.txt")],
    [regular("LibriSpeech/../../escaped.txt")],
    [regular("{outside}/absolute.txt")],
    [link("LibriSpeech/out", "../../outside")],
    [link("LibriSpeech/etc", "/etc")],
    [link("LibriSpeech/here", "."), link("LibriSpeech/here/up", "../..")],       # escape through an earlier link
    [link("LibriSpeech/hard", "../outside/file", kind=tarfile.LNKTYPE)],
    [device("LibriSpeech/null")],
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "symlink-chain", "hardlink-out",
        "device"])
def test_malicious_archives_are_refused(tmp_path, members):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_text("secret")
    for info, _ in members:
        info.name = info.name.format(outside=tmp_path / "outside")
    archive = tar_with(tmp_path, regular("LibriSpeech/ok.txt"), *members)
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "target" / "inner")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "target" / "escaped.txt").exists()
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["file"]


def test_links_inside_the_target_are_allowed(tmp_path):
    archive = tar_with(tmp_path, regular("LibriSpeech/a/file.txt", b"data"),
                       link("LibriSpeech/b", "a"), link("LibriSpeech/c.txt", "LibriSpeech/a/file.txt", tarfile.LNKTYPE))
    safe_extract(archive, tmp_path / "target")
    assert (tmp_path / "target" / "LibriSpeech" / "b" / "file.txt").read_bytes() == b"data"
    assert (tmp_path / "target" / "LibriSpeech" / "c.txt").read_bytes() == b"data"


def test_scan_reports_audio_and_transcripts_that_do_not_pair_up(tmp_path, server):
    safe_extract(server["archive"], tmp_path)
    chapter = tmp_path / "LibriSpeech" / SUBSET / "19" / "198"
    (chapter / "19-198-0000.flac").unlink()
    soundfile.write(chapter / "19-198-0009.flac", np.zeros(1600), 16000)
    utterances, report = scan_subset(tmp_path / "LibriSpeech" / SUBSET)
    assert [u.id for u in utterances] == ["19-198-0001"]
    assert report.counts == {manifest.MISSING_AUDIO: 1, manifest.MISSING_TRANSCRIPT: 1}
