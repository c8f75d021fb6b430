"""`ds2 preprocess`: get the corpus, check every utterance, write the train/dev/test manifests.

Sources (cfg.data.source):
  synth        render the embedded espeak-ng corpus into <data_dir>/synth (skipped when done)
  librispeech  use LibriSpeech/<subset> under data.librispeech_dir (default <data_dir>/librispeech),
               downloading and extracting the subsets that are not there
  manifest     read data.{train,dev,test}_manifest (.json or .csv) as the input

Every utterance is checked; those that cannot be trained or scored on are skipped and counted in
a printed table: unreadable or empty audio, missing or empty transcripts, characters outside
the labels, audio longer than data.max_duration, and transcripts longer than the model can emit
(CTC needs one output frame per label plus one per adjacent repeat, and the conv front-end
divides the frame count by its time strides). The kept utterances go to
<data_dir>/manifests/<split>.json and .csv, with one normalised transcript file per utterance
under <data_dir>/transcripts/<split>/. Train and eval find them with manifest_path(cfg, split).
"""
from __future__ import annotations

import math
import os
import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Tuple

from ds2.config import Config
from ds2.data.librispeech import OPENSLR_URL, LibriSpeechError, prepare_subset, scan_subset
from ds2.data.manifest import (ManifestError, ProblemReport, Utterance, read_manifest,
                               write_csv_manifest, write_json_manifest)
from ds2.data.synth import SynthError, build_corpus
from ds2.features import AudioError, FeatureCache, num_frames
from ds2.text import check_labels, encode, min_ctc_frames

SPLITS = ("train", "dev", "test")
TOO_LONG = "longer than data.max_duration"
TRANSCRIPT_TOO_LONG = "transcript too long for the model's output frames"


class PreprocessError(Exception):
    """A configuration that points at data that is not there."""


def manifest_path(cfg: Config, split: str) -> Path:
    """The checked manifest of split that train and eval read (written by `ds2 preprocess`).

    data.<split>_manifest names it for the synth and librispeech sources when set; with
    source=manifest those settings name the inputs, and the checked copies live in data_dir.
    """
    given = getattr(cfg.data, f"{split}_manifest")
    if given and cfg.data.source != "manifest":
        return Path(given)
    return Path(cfg.data.data_dir) / "manifests" / f"{split}.json"


def feature_cache_dir(cfg: Config) -> Path:
    return Path(cfg.data.data_dir) / "features"


def output_time_stride(cfg: Config) -> int:
    """Input frames per output frame: the product of the conv layers' time strides."""
    return cfg.model.conv1_stride[1] * cfg.model.conv2_stride[1]


def output_frames(duration: float, cfg: Config) -> int:
    """Model output frames for audio of duration seconds (at the feature sample rate).

    Exact for audio stored at the feature sample rate; after resampling, within one input frame.
    """
    samples = round(duration * cfg.features.sample_rate)
    return math.ceil(num_frames(samples, cfg.features) / output_time_stride(cfg))


def collect_split(cfg: Config, split: str, args) -> Tuple[List[Utterance], ProblemReport]:
    """The utterances of split from the configured source, problems already counted."""
    labels = cfg.model.labels
    data = cfg.data
    if data.source == "synth":
        sizes = {"train": data.synth_train, "dev": data.synth_dev, "test": data.synth_test}
        root = build_corpus(Path(data.data_dir) / "synth", sizes, data.synth_seed,
                            cfg.features.sample_rate, args.workers)
        return scan_subset(root / split, labels)
    if data.source == "librispeech":
        root = Path(data.librispeech_dir or Path(data.data_dir) / "librispeech")
        if data.librispeech_dir and not root.is_dir():
            raise PreprocessError(f"data.librispeech_dir {root} is not a directory")
        md5s = dict(item.split("=", 1) for item in args.librispeech_md5)
        utterances: List[Utterance] = []
        report = ProblemReport()
        for subset in getattr(data, f"{split}_subsets"):
            found, problems = scan_subset(prepare_subset(root, subset, args.librispeech_url, md5s.get(subset)), labels)
            utterances += found
            report.update(problems)
        return utterances, report
    if data.source == "manifest":
        given = getattr(data, f"{split}_manifest")
        if not Path(given).is_file():
            raise PreprocessError(f"data.{split}_manifest {given!r} is not a file")
        return read_manifest(given, labels)
    raise PreprocessError(f"data.source {data.source!r} is not one of synth, librispeech, manifest")


def filter_for_model(utterances: List[Utterance], cfg: Config, report: ProblemReport) -> List[Utterance]:
    """Drop (and count) utterances too long for data.max_duration or for the model's output."""
    kept = []
    for utterance in utterances:
        if utterance.duration > cfg.data.max_duration:
            report.add(TOO_LONG, f"{utterance.id} ({utterance.duration:.1f} s)")
            continue
        needed = min_ctc_frames(encode(utterance.text, cfg.model.labels))
        available = output_frames(utterance.duration, cfg)
        if available < needed:
            report.add(TRANSCRIPT_TOO_LONG, f"{utterance.id} ({needed} needed, {available} frames)")
            continue
        kept.append(utterance)
    return kept


def write_transcripts(utterances: List[Utterance], directory: Path) -> None:
    """One <id>.txt per utterance (the CSV form needs files); unchanged files are not rewritten."""
    directory.mkdir(parents=True, exist_ok=True)
    for utterance in utterances:
        path = directory / f"{utterance.id}.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != utterance.text:
            path.write_text(utterance.text, encoding="utf-8")
        utterance.transcript_path = str(path.resolve())


def summary_table(found: Dict[str, int], kept: Dict[str, List[Utterance]], reports: Dict[str, ProblemReport]) -> str:
    splits = list(kept)
    reasons = sorted({reason for report in reports.values() for reason in report.counts})
    rows = [("found", [str(found[s]) for s in splits]),
            ("kept", [str(len(kept[s])) for s in splits]),
            ("kept hours", [f"{sum(u.duration for u in kept[s]) / 3600:.2f}" for s in splits])]
    rows += [(f"skipped: {reason}", [str(reports[s].counts[reason]) for s in splits]) for reason in reasons]
    width = max(len(name) for name, _ in rows)
    lines = [" " * width + "".join(f"{s:>10}" for s in splits)]
    lines += [name.ljust(width) + "".join(f"{value:>10}" for value in values) for name, values in rows]
    return "\n".join(lines)


_worker_cache = None  # each warm_feature_cache worker process sets its own FeatureCache here


def _cache_worker_init(cache_dir: str, feature_cfg) -> None:
    global _worker_cache
    _worker_cache = FeatureCache(cache_dir, feature_cfg)


def _cache_one(audio_path: str) -> None:
    _worker_cache.features(audio_path)


def warm_feature_cache(utterances: List[Utterance], cfg: Config, workers: int) -> None:
    from tqdm import tqdm

    paths = [u.audio_path for u in utterances]
    with Pool(workers, initializer=_cache_worker_init, initargs=(str(feature_cache_dir(cfg)), cfg.features)) as pool:
        for _ in tqdm(pool.imap_unordered(_cache_one, paths, chunksize=16), total=len(paths),
                      desc="computing features", unit="utt"):
            pass


def add_arguments(parser) -> None:
    parser.add_argument("--warm-cache", action="store_true",
                        help="compute every kept utterance's features now (train otherwise does it on first use)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes for speech synthesis and features (default: all usable cores)")
    parser.add_argument("--librispeech-url", default=OPENSLR_URL, metavar="URL",
                        help=f"where <subset>.tar.gz files are downloaded from (default {OPENSLR_URL})")
    parser.add_argument("--librispeech-md5", action="append", default=[], metavar="SUBSET=MD5",
                        help="expected MD5 of a subset's archive, overriding the built-in table (repeatable)")


def run(cfg: Config, args) -> int:
    try:
        check_labels(cfg.model.labels)
    except ValueError as exc:
        print(f"ds2 preprocess: error: model.labels: {exc}", file=sys.stderr)
        return 1
    bad_md5 = [item for item in args.librispeech_md5 if "=" not in item]
    if bad_md5:
        print(f"ds2 preprocess: error: --librispeech-md5 takes SUBSET=MD5, got {bad_md5[0]!r}", file=sys.stderr)
        return 1
    splits = [s for s in SPLITS if cfg.data.source != "manifest" or getattr(cfg.data, f"{s}_manifest")]
    if "train" not in splits:
        print("ds2 preprocess: error: data.source=manifest needs data.train_manifest", file=sys.stderr)
        return 1
    found: Dict[str, int] = {}
    kept: Dict[str, List[Utterance]] = {}
    reports: Dict[str, ProblemReport] = {}
    try:
        for split in splits:
            utterances, report = collect_split(cfg, split, args)
            kept[split] = filter_for_model(utterances, cfg, report)
            found[split] = len(kept[split]) + report.total
            reports[split] = report
            write_transcripts(kept[split], Path(cfg.data.data_dir) / "transcripts" / split)
            if kept[split]:
                path = manifest_path(cfg, split)
                write_json_manifest(path, kept[split])
                write_csv_manifest(path.with_suffix(".csv"), kept[split])
    except (PreprocessError, ManifestError, LibriSpeechError, SynthError, AudioError, OSError) as exc:
        print(f"ds2 preprocess: error: {exc}", file=sys.stderr)
        return 1
    print(summary_table(found, kept, reports))
    for split in splits:
        if reports[split].total:
            print(f"{split}: {reports[split]}")
    empty = [split for split in splits if not kept[split]]
    if empty:
        print(f"ds2 preprocess: error: no usable utterances in {', '.join(empty)}", file=sys.stderr)
        return 1
    for split in splits:
        print(f"{split} manifest: {manifest_path(cfg, split)} (and .csv)")
    if args.warm_cache:
        warm_feature_cache([u for split in splits for u in kept[split]], cfg, args.workers)
    return 0
