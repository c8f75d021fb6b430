"""LibriSpeech: find an extracted copy or download, verify and safely extract a subset; scan it.

Layout (as in the official archives): <root>/LibriSpeech/<subset>/<speaker>/<chapter>/
<speaker>-<chapter>-<utt>.flac and <speaker>-<chapter>.trans.txt with lines `UTTID TEXT`.
An existing copy (extracted earlier, or mounted read-only) is used as it is and never written to.

Downloads resume: bytes arrive in <archive>.part, a rerun asks the server for the rest with an
HTTP Range request, and the file gets its final name only after its MD5 matched.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import List, Optional, Tuple, Union

from ds2.config import OPENSLR_URL
from ds2.data.manifest import (MISSING_TRANSCRIPT, ProblemReport, Utterance, check_utterance,
                               speaker_from_id)
from ds2.errors import DataError, UserError
SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500",
           "dev-clean", "dev-other", "test-clean", "test-other")
# MD5 of each official archive, as listed in OpenSLR's https://www.openslr.org/resources/12/md5sum.txt.
# Not fetched from there by us (no network when written): each value was cross-checked against
# several independent public projects quoting that file, and all agreed.
OFFICIAL_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}
DOWNLOAD_CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_SECONDS = 60   # per socket operation, not for the whole download
HTTP_RANGE_NOT_SATISFIABLE = 416


class LibriSpeechError(UserError):
    """Download, verification or extraction failed; the message says what to do."""


class ChecksumError(LibriSpeechError):
    pass


class ArchiveError(DataError, LibriSpeechError):
    """A tar archive that cannot be extracted: damaged, cut off, or with a member it refuses (one that
    would be written outside the target folder, a device file)."""


class UnsafeArchiveError(ArchiveError):
    pass


# Errors extracting a member that are about the disk, not the archive (the others: a member that cannot be
# written as its name says, e.g. a file where an earlier member made a folder, is the archive's fault).
DISK_ERRNOS = frozenset([errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO])
# What to do about an archive that cannot be extracted.
ARCHIVE_FIX = "delete it and run again to download it afresh, or set data.librispeech_url to another mirror"


def check_subsets(subsets: List[str]) -> None:
    """UserError naming the first subset that is not a LibriSpeech subset (data.*_subsets)."""
    import difflib

    for subset in subsets:
        if subset not in SUBSETS:
            close = difflib.get_close_matches(subset, SUBSETS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"choose from {', '.join(SUBSETS)}"
            raise LibriSpeechError(f"unknown LibriSpeech subset {subset!r} in data.*_subsets; {hint}")


def find_subset(root: Union[str, Path], subset: str) -> Optional[Path]:
    """<root>/LibriSpeech/<subset> or <root>/<subset> if it exists (root may be the LibriSpeech dir)."""
    root = Path(root)
    for candidate in (root / "LibriSpeech" / subset, root / subset):
        if candidate.is_dir():
            return candidate
    return None


def file_md5(path: Union[str, Path]) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(DOWNLOAD_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_md5(subset: str, archive: Path, given: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(md5, where it came from): a value given by the user, else a `<archive>.md5` sidecar file
    (first word, as md5sum writes it), else the official table; (None, ...) if none is known."""
    if given:
        return given.lower(), "the value given"
    sidecar = archive.with_name(archive.name + ".md5")
    if sidecar.is_file():
        words = sidecar.read_text().split()
        if words:
            return words[0].lower(), str(sidecar)
    if subset in OFFICIAL_MD5:
        return OFFICIAL_MD5[subset], "the official OpenSLR checksum table"
    return None, "nowhere"


def download(url: str, dest: Union[str, Path], md5: Optional[str] = None,
             mirror_setting: str = "data.librispeech_url") -> Path:
    """Download url to dest, resuming a previous partial download; verify md5 when given. A checksum
    failure names mirror_setting, the setting that picks another mirror."""
    from ds2.progress import progress

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code != HTTP_RANGE_NOT_SATISFIABLE or not offset:
            raise LibriSpeechError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        response = None  # the partial file already holds every byte: go on to verification
    except (urllib.error.URLError, OSError) as exc:
        raise LibriSpeechError(f"download of {url} failed: {exc}") from exc
    if response is not None:
        with response:
            resumed = offset > 0 and response.status == 206
            if not resumed:
                offset = 0  # fresh download, or a server that ignored the Range header
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            try:
                with open(part, "ab" if resumed else "wb") as out, \
                        progress(total=total, initial=offset, unit="B", desc=dest.name) as bar:
                    for chunk in iter(lambda: response.read(DOWNLOAD_CHUNK_BYTES), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # dropped connection, timeout, short read
                raise LibriSpeechError(f"download of {url} interrupted ({exc}); run again to resume") from exc
        if total is not None and part.stat().st_size != total:
            raise LibriSpeechError(f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                                   "run again to resume")
    if md5:
        actual = file_md5(part)
        if actual != md5.lower():
            part.unlink()  # a corrupt file would be resumed from forever; start over next time
            raise ChecksumError(f"{url}: MD5 {actual} does not match the expected {md5}; the download was deleted: "
                                f"run again to download it afresh, or set {mirror_setting} to another mirror")
    os.replace(part, dest)
    return dest


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def safe_extract(archive: Union[str, Path], target: Union[str, Path]) -> None:
    """Extract a tar archive into target, refusing anything that could write outside it.

    Refused: absolute names, names with '..', device files and FIFOs, and links whose target
    (resolved on disk, following links extracted before) leaves the target directory.
    Modes, owners and times are not applied, so no setuid bits or foreign owners appear.
    """
    target = os.path.realpath(target)
    os.makedirs(target, exist_ok=True)
    name = None
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = member.name
                _refuse_unsafe(archive, target, member)
                tar.extract(member, target, set_attrs=False)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise   # the disk, not the archive: a full disk or a read-only folder
        raise ArchiveError(archive, f"not a readable tar archive ({exc})", ARCHIVE_FIX,
                           place=f"after member {name!r}" if name else None) from None


def _refuse_unsafe(archive, target: str, member: tarfile.TarInfo) -> None:
    """UnsafeArchiveError for a member that could write outside target: an absolute or '..' name, a
    device file or FIFO, a link leaving the target (resolved on disk, following links extracted before)."""
    name = member.name
    place = f"member {name!r}"
    if os.path.isabs(name) or ".." in Path(name).parts or "\0" in name:
        raise UnsafeArchiveError(archive, f"member {name!r} has an absolute or '..' path", ARCHIVE_FIX, place=place)
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(archive, f"member {name!r} is a device file or FIFO", ARCHIVE_FIX, place=place)
    parent = os.path.realpath(os.path.join(target, os.path.dirname(name)))
    destination = os.path.join(parent, os.path.basename(name))
    if not _inside(parent, target) or os.path.islink(destination):
        raise UnsafeArchiveError(archive, f"member {name!r} would be written outside {target}", ARCHIVE_FIX,
                                 place=place)
    if member.issym():
        pointed = os.path.realpath(os.path.join(parent, member.linkname))
    elif member.islnk():
        pointed = os.path.realpath(os.path.join(target, member.linkname))
    else:
        pointed = destination
    if not _inside(pointed, target):
        raise UnsafeArchiveError(archive, f"link {name!r} -> {member.linkname!r} points outside {target}",
                                 ARCHIVE_FIX, place=place)


def reject(archive: Path, why: str) -> None:
    """Move a refused archive out of the way (so the next run downloads afresh) and say so."""
    rejected = archive.with_name(archive.name + ".rejected")
    os.replace(archive, rejected)
    raise ArchiveError(archive, f"refused: {why}", f"it was moved to {rejected.name} (delete it when done "
                                                   f"looking); run again to download the subset afresh, or set "
                                                   f"data.librispeech_url to another mirror")


def prepare_subset(root: Union[str, Path], subset: str, base_url: str = OPENSLR_URL,
                   md5: Optional[str] = None) -> Path:
    """The directory of subset under root: found as it is, or downloaded, verified and extracted."""
    existing = find_subset(root, subset)
    if existing is not None:
        return existing
    check_subsets([subset])
    root = Path(root)
    archive = root / f"{subset}.tar.gz"
    checksum, source = expected_md5(subset, archive, md5)
    if not archive.exists():
        if checksum is None:
            print(f"warning: no MD5 known for {subset}; the download will not be verified")
        else:
            print(f"{subset}: MD5 from {source}")
        download(f"{base_url.rstrip('/')}/{subset}.tar.gz", archive, checksum)
    elif checksum is not None and file_md5(archive) != checksum:
        # An archive put there by hand, or left by an older version: verified like a download.
        reject(archive, f"its MD5 does not match the expected {checksum} ({source})")
    # Extract beside the final place, then move the finished subset in, so an interrupted
    # extraction never looks like a complete copy; a leftover from a killed run is removed first.
    staging = root / f".extract-{subset}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            safe_extract(archive, staging)
            extracted = staging / "LibriSpeech" / subset
            if not extracted.is_dir():
                raise LibriSpeechError(f"{archive} does not contain LibriSpeech/{subset}/")
        except LibriSpeechError as exc:
            reject(archive, exc.problem if isinstance(exc, DataError) else str(exc))
        (root / "LibriSpeech").mkdir(parents=True, exist_ok=True)
        for extra in (staging / "LibriSpeech").iterdir():  # README, SPEAKERS.TXT, ... shared by subsets
            if extra.is_file() and not (root / "LibriSpeech" / extra.name).exists():
                os.replace(extra, root / "LibriSpeech" / extra.name)
        os.replace(extracted, root / "LibriSpeech" / subset)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()  # its content is verified and extracted; the archive would double the disk use
    return root / "LibriSpeech" / subset


def scan_subset(subset_dir: Union[str, Path], labels: Optional[str] = None) -> Tuple[List[Utterance], ProblemReport]:
    """Utterances of one LibriSpeech-layout directory, durations from the FLAC headers."""
    subset_dir = Path(subset_dir)
    report = ProblemReport()
    utterances: List[Utterance] = []
    for transcripts in sorted(subset_dir.glob("*/*/*.trans.txt")):
        chapter_dir = transcripts.parent
        described = set()
        for line in transcripts.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            utterance_id, _, text = line.strip().partition(" ")
            described.add(utterance_id)
            audio_path = os.path.abspath(chapter_dir / f"{utterance_id}.flac")
            checked = check_utterance(utterance_id, audio_path, text, None, report, labels)
            if checked is not None:
                utterances.append(Utterance(id=utterance_id, audio_path=audio_path, text=checked[0],
                                            duration=checked[1], speaker=speaker_from_id(utterance_id)))
        for audio in sorted(chapter_dir.glob("*.flac")):
            if audio.stem not in described:
                report.add(MISSING_TRANSCRIPT, str(audio))
    return utterances, report
