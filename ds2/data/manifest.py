"""Manifests: the list of utterances a stage reads, in two on-disk forms.

JSON (deepspeech.pytorch's form, extended):
    {"root_path": "/abs/dir",
     "samples": [{"wav_path": "rel/a.flac", "transcript_path": "rel/a.txt", "duration": 2.1,
                  "transcript": "A B", "speaker": "19", "id": "19-198-0001"}, ...]}
  Paths are relative to root_path (absolute paths are used as they are). A relative root_path is
  taken relative to the manifest's directory. Only wav_path and transcript_path are required:
  a missing transcript is read from transcript_path, a missing duration from the audio header.
  A manifest `ds2 preprocess` writes also records the data settings that produced it under
  "ds2_data_settings" (ds2.data.sets.data_settings); train and eval refuse one written under other settings.
CSV (the report's form): `wav_path,transcript_path` per line, absolute paths, no header.

Readers return the usable utterances and a ProblemReport; an entry is never dropped without
being counted there under a reason.

Command line (ds2/manifest_command.py): `ds2 manifest to-csv IN.json OUT.csv` and `ds2 manifest to-json
IN.csv OUT.json`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ds2 import files
from ds2.errors import DataError
from ds2.text import describe_chars, normalize_transcript, out_of_label_chars

# Problem reasons shared by every reader (manifest, LibriSpeech scan, preprocess filters).
MISSING_AUDIO = "missing audio file"
UNREADABLE_AUDIO = "unreadable audio"
EMPTY_AUDIO = "empty audio"
MISSING_TRANSCRIPT = "missing transcript"
UNREADABLE_TRANSCRIPT = "unreadable transcript file"
EMPTY_TRANSCRIPT = "empty transcript"
OUT_OF_LABELS = "characters outside the labels"
DUPLICATE_ID = "duplicate utterance id"
BAD_ENTRY = "malformed manifest entry"
NOT_UTF8 = "manifest entry not UTF-8 text"
NO_TRANSCRIPT_FILE = "no transcript file (CSV needs one)"
DURATION_CORRECTED = "duration differs from the audio header"
# A manifest duration further than this from the audio header's is counted and replaced by the header's.
DURATION_TOLERANCE_S = 0.01

# How many offending ids/paths a report keeps per reason, to show without flooding the terminal.
EXAMPLES_PER_REASON = 3
# LibriSpeech utterance ids are <speaker>-<chapter>-<index>.
LIBRISPEECH_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
CSV_HEADER = ["wav_path", "transcript_path"]
# The top-level key of a JSON manifest holding the data settings that produced it.
DATA_SETTINGS_KEY = "ds2_data_settings"


class ManifestError(DataError):
    """A manifest file that cannot be read or written at all (as opposed to single bad entries, which
    are counted, named and skipped)."""


# What to do about a manifest that cannot be read at all.
MANIFEST_FIX = "fix or remove it, or run ds2 preprocess again to write it afresh"


@dataclass
class Utterance:
    id: str
    audio_path: str           # absolute
    text: str                 # normalised transcript
    duration: float           # seconds
    speaker: str = ""
    transcript_path: str = ""  # absolute; empty when the transcript exists only inline


class ProblemReport:
    """Items skipped (counts), and items kept after a correction (corrected), by reason, with the
    first few examples of each."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.corrected: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)

    def _example(self, reason: str, example: str) -> None:
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(example)

    def add(self, reason: str, example: str) -> None:
        """An item skipped for `reason`."""
        self.counts[reason] += 1
        self._example(reason, example)

    def correct(self, reason: str, example: str) -> None:
        """An item kept, with something it said replaced by what the data says."""
        self.corrected[reason] += 1
        self._example(reason, example)

    def update(self, other: "ProblemReport") -> None:
        self.counts.update(other.counts)
        self.corrected.update(other.corrected)
        for reason, examples in other.examples.items():
            for example in examples:
                self._example(reason, example)

    @property
    def total(self) -> int:
        """Items skipped."""
        return sum(self.counts.values())

    def __str__(self) -> str:
        if not self.total and not self.corrected:
            return "no problems"
        lines = [f"{self.total} skipped" + (f", {sum(self.corrected.values())} corrected" if self.corrected else "") + ":"]
        for reason, count in self.counts.most_common() + self.corrected.most_common():
            lines.append(f"  {count:7d}  {reason}  (e.g. {'; '.join(self.examples[reason])})")
        return "\n".join(lines)


def audio_duration(path: Union[str, Path]) -> float:
    """Seconds of audio, from the file header only. Raises UnreadableAudioError."""
    import soundfile
    from ds2.features import UnreadableAudioError

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # LibsndfileError is a RuntimeError
        raise UnreadableAudioError(path, f"cannot read its audio header ({exc})") from exc
    if info.samplerate <= 0 or info.frames < 0:
        raise UnreadableAudioError(path, f"its header says {info.frames} frames at {info.samplerate} Hz")
    return info.frames / info.samplerate


def speaker_from_id(utterance_id: str) -> str:
    """The speaker of a LibriSpeech-style id ('19-198-0001' -> '19'), else ''."""
    match = LIBRISPEECH_ID.match(utterance_id)
    return match.group(1) if match else ""


def _read_transcript_file(path: str, report: ProblemReport) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        report.add(MISSING_TRANSCRIPT, path)
    except (OSError, UnicodeDecodeError) as exc:
        report.add(UNREADABLE_TRANSCRIPT, f"{path}: {exc}")
    return None


def check_utterance(utterance_id: str, audio_path: str, text: Optional[str], duration: Optional[float],
                    report: ProblemReport, labels: Optional[str] = None,
                    verify_audio: bool = False) -> Optional[Tuple[str, float]]:
    """(normalised text, duration) if the utterance is usable, else None with the reason reported.

    duration None means: read it from the audio header. verify_audio reads the header anyway: an
    unreadable file is skipped, and a duration that differs from the header's is corrected.
    """
    from ds2.features import UnreadableAudioError

    if text is None:
        return None  # the transcript reader already reported why
    if not os.path.isfile(audio_path):
        report.add(MISSING_AUDIO, audio_path)
        return None
    text = normalize_transcript(text)
    if not text:
        report.add(EMPTY_TRANSCRIPT, utterance_id)
        return None
    if labels is not None:
        unknown = out_of_label_chars(text, labels)
        if unknown:
            report.add(OUT_OF_LABELS, f"{utterance_id} ({describe_chars(unknown)})")
            return None
    if duration is None or verify_audio:
        try:
            header = audio_duration(audio_path)
        except UnreadableAudioError:
            report.add(UNREADABLE_AUDIO, audio_path)
            return None
        if duration is not None and not abs(duration - header) <= DURATION_TOLERANCE_S:
            report.correct(DURATION_CORRECTED, f"{utterance_id} ({duration:g} s listed, {header:.2f} s in the file)")
        duration = header
    if duration <= 0:
        report.add(EMPTY_AUDIO, audio_path)
        return None
    return text, duration


def _resolve(root: str, path: str) -> str:
    return os.path.normpath(os.path.join(root, path))  # join keeps an absolute path as it is


def _not_utf8(value) -> bool:
    """True when a JSON value holds text that was not UTF-8 in the file (decoded with surrogateescape)
    or a lone surrogate escape: neither can become a path or a transcript."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _load_json_manifest(path: Path) -> dict:
    """The manifest's top-level object. Bytes that are not UTF-8 are kept (as surrogates) so that only
    the entries holding them are rejected, not the whole file."""
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ManifestError(path, f"cannot read it ({exc.strerror or exc})", "check the path and its permissions") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(path, f"not valid JSON: {exc.msg}", MANIFEST_FIX,
                            place=f"line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise ManifestError(path, "not a manifest: JSON nested too deeply", MANIFEST_FIX) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("samples"), list):
        raise ManifestError(path, "expected an object with a 'samples' list", MANIFEST_FIX)
    root_path = manifest.get("root_path")
    if root_path is not None and (not isinstance(root_path, str) or _not_utf8(root_path) or "\0" in root_path):
        raise ManifestError(path, "root_path is not a folder name", MANIFEST_FIX)
    return manifest


def _is_path(value) -> bool:
    return isinstance(value, str) and bool(value) and "\0" not in value


def _entry_problem(sample) -> Optional[str]:
    """Why a JSON manifest entry cannot be used as one, or None."""
    if not isinstance(sample, dict):
        return "not an object"
    if _not_utf8(sample):
        return None  # counted under its own reason
    if not _is_path(sample.get("wav_path")):
        return "no wav_path"
    if sample.get("transcript_path") not in (None, "") and not _is_path(sample.get("transcript_path")):
        return "transcript_path is not a path"
    if sample.get("transcript") is not None and not isinstance(sample["transcript"], str):
        return "transcript is not text"
    duration = sample.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not math.isfinite(duration)):
        return f"duration {duration!r} is not a finite number"
    return None


def read_json_manifest(path: Union[str, Path], labels: Optional[str] = None,
                       verify_audio: bool = False) -> Tuple[List[Utterance], ProblemReport]:
    path = Path(path)
    manifest = _load_json_manifest(path)
    root = _resolve(str(path.resolve().parent), manifest.get("root_path") or ".")
    report = ProblemReport()
    utterances: List[Utterance] = []
    seen = set()
    for index, sample in enumerate(manifest["samples"]):
        if isinstance(sample, dict) and _not_utf8(sample):
            report.add(NOT_UTF8, f"{path} sample {index}")
            continue
        problem = _entry_problem(sample)
        if problem:
            report.add(BAD_ENTRY, f"{path} sample {index}: {problem}")
            continue
        audio_path = _resolve(root, sample["wav_path"])
        utterance_id = str(sample.get("id") or Path(audio_path).stem)
        if utterance_id in seen:
            report.add(DUPLICATE_ID, utterance_id)
            continue
        seen.add(utterance_id)
        transcript_path = _resolve(root, sample["transcript_path"]) if sample.get("transcript_path") else ""
        text = sample.get("transcript")
        if text is None:
            if not transcript_path:
                report.add(BAD_ENTRY, f"{path} sample {index}: neither transcript nor transcript_path")
                continue
            text = _read_transcript_file(transcript_path, report)
        checked = check_utterance(utterance_id, audio_path, text, sample.get("duration"), report, labels, verify_audio)
        if checked is None:
            continue
        utterances.append(Utterance(id=utterance_id, audio_path=audio_path, text=checked[0], duration=checked[1],
                                    speaker=str(sample.get("speaker") or speaker_from_id(utterance_id)),
                                    transcript_path=transcript_path))
    return utterances, report


def read_csv_manifest(path: Union[str, Path], labels: Optional[str] = None) -> Tuple[List[Utterance], ProblemReport]:
    """Rows `wav_path,transcript_path`; relative paths are taken relative to the CSV's directory."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ManifestError(path, f"cannot read it ({exc.strerror or exc})", "check the path and its permissions") from None
    root = str(path.resolve().parent)
    report = ProblemReport()
    utterances: List[Utterance] = []
    seen = set()
    # One row per line, each parsed on its own, so a bad line costs that line only.
    for line_number, line in enumerate(text.split("\n"), start=1):
        try:
            row = next(csv.reader([line.rstrip("\r")]), [])
        except csv.Error:
            report.add(BAD_ENTRY, f"{path}:{line_number}")
            continue
        if not row or (line_number == 1 and row == CSV_HEADER):
            continue
        if _not_utf8(row):
            report.add(NOT_UTF8, f"{path}:{line_number}")
            continue
        if len(row) != 2 or not _is_path(row[0]) or not _is_path(row[1]):
            report.add(BAD_ENTRY, f"{path}:{line_number}")
            continue
        audio_path, transcript_path = _resolve(root, row[0]), _resolve(root, row[1])
        utterance_id = Path(audio_path).stem
        if utterance_id in seen:
            report.add(DUPLICATE_ID, utterance_id)
            continue
        seen.add(utterance_id)
        text = _read_transcript_file(transcript_path, report)
        checked = check_utterance(utterance_id, audio_path, text, None, report, labels)
        if checked is None:
            continue
        utterances.append(Utterance(id=utterance_id, audio_path=audio_path, text=checked[0], duration=checked[1],
                                    speaker=speaker_from_id(utterance_id), transcript_path=transcript_path))
    return utterances, report


def read_manifest(path: Union[str, Path], labels: Optional[str] = None,
                  verify_audio: bool = False) -> Tuple[List[Utterance], ProblemReport]:
    """Read a .json or .csv manifest. With labels, entries with other characters are reported and skipped;
    with verify_audio, every audio header is read (see check_utterance)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_json_manifest(path, labels, verify_audio)
    if suffix == ".csv":
        return read_csv_manifest(path, labels)
    raise ManifestError(path, f"unknown manifest type {suffix!r}", "give a .json or .csv manifest")


def _common_root(paths: Iterable[str], fallback: str) -> str:
    directories = [os.path.dirname(p) for p in paths]
    return os.path.commonpath(directories) if directories else fallback


def read_data_settings(path: Union[str, Path]) -> Optional[Dict]:
    """The data settings a JSON manifest records (see write_json_manifest), or None when it records none
    (a CSV manifest, one written by another tool or by a ds2 from before they were recorded)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return None
    settings = _load_json_manifest(path).get(DATA_SETTINGS_KEY)
    if settings is not None and not isinstance(settings, dict):
        raise ManifestError(path, f"{DATA_SETTINGS_KEY} is not an object", MANIFEST_FIX)
    return settings


def write_json_manifest(path: Union[str, Path], utterances: List[Utterance],
                        data_settings: Optional[Dict] = None) -> None:
    """root_path is written absolute (as deepspeech.pytorch does); entry paths relative to it. With
    data_settings, the manifest records them (ds2 preprocess: the settings that selected its utterances)."""
    path = Path(path)
    all_paths = [u.audio_path for u in utterances] + [u.transcript_path for u in utterances if u.transcript_path]
    root = _common_root(all_paths, str(path.resolve().parent))
    samples = []
    for utterance in utterances:
        sample = {"wav_path": os.path.relpath(utterance.audio_path, root)}
        if utterance.transcript_path:
            sample["transcript_path"] = os.path.relpath(utterance.transcript_path, root)
        sample.update(duration=utterance.duration, transcript=utterance.text,
                      speaker=utterance.speaker, id=utterance.id)
        samples.append(sample)
    header = {"root_path": root}
    if data_settings is not None:
        header[DATA_SETTINGS_KEY] = data_settings
    files.write_text(path, json.dumps(dict(header, samples=samples), indent=1) + "\n")


def write_csv_manifest(path: Union[str, Path], utterances: List[Utterance]) -> None:
    """Absolute `wav_path,transcript_path` rows, no header. Every utterance needs a transcript file."""
    missing = [u.id for u in utterances if not u.transcript_path]
    if missing:
        raise ManifestError(path, f"{len(missing)} utterances have no transcript file, which CSV needs "
                                  f"(e.g. {', '.join(missing[:EXAMPLES_PER_REASON])})", "write a JSON manifest instead")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for utterance in utterances:
        writer.writerow([os.path.abspath(utterance.audio_path), os.path.abspath(utterance.transcript_path)])
    files.write_text(path, buffer.getvalue())

