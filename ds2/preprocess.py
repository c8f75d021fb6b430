"""`ds2 preprocess`: get the corpus, check every utterance, write the train/dev/test manifests.

Sources (cfg.data.source):
  synth        render the embedded espeak-ng corpus into <data_dir>/synth (skipped when done)
  librispeech  use LibriSpeech/<subset> under data.librispeech_dir (default <data_dir>/librispeech),
               downloading (from data.librispeech_url, checked against data.librispeech_md5 or the
               official checksums) and extracting the subsets that are not there
  manifest     read data.{train,dev,test}_manifest (.json or .csv) as the input

Every utterance is checked; those that cannot be trained or scored on are skipped and counted in
a printed table: unreadable or empty audio, missing or empty transcripts, characters outside
the labels, audio longer than data.max_duration, and transcripts longer than the model can emit
(CTC needs one output frame per label plus one per adjacent repeat, and the conv front-end
divides the frame count by its time strides). A duration given in an input manifest is checked
against the audio file's header and corrected (and counted) where they differ, because batching
plans every batch from the durations. The kept utterances go to <data_dir>/manifests/<split>.json
and .csv, with one normalised transcript file per utterance under <data_dir>/transcripts/<split>/.
Train and eval find them with ds2.data.sets.manifest_path(cfg, split). `--splits test` prepares only
the splits named (make eval-pretrained: LibriSpeech's test-clean without its training data).
"""
from __future__ import annotations

import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Tuple

from ds2 import files
from ds2.config import Config, count
from ds2.data.librispeech import check_subsets, prepare_subset, scan_subset
from ds2.data.manifest import (EXAMPLES_PER_REASON, ProblemReport, Utterance, read_manifest, write_csv_manifest,
                               write_json_manifest)
from ds2.data.sets import SPLITS, data_settings, feature_cache_dir, manifest_path, sweep_feature_cache
from ds2.data.synth import build_corpus
from ds2.errors import UserError
from ds2.features import AudioError, FeatureCache, check_window
from ds2.shapes import output_frames
from ds2.text import encode, min_ctc_frames

TOO_LONG = "longer than data.max_duration"
TRANSCRIPT_TOO_LONG = "transcript too long for the model's output frames"


def collect_split(cfg: Config, split: str, workers: int) -> Tuple[List[Utterance], ProblemReport]:
    """The utterances of split from the configured source, problems already counted."""
    labels = cfg.model.labels
    data = cfg.data
    if data.source == "synth":
        sizes = {"train": data.synth_train, "dev": data.synth_dev, "test": data.synth_test}
        root = build_corpus(Path(data.data_dir) / "synth", sizes, data.synth_seed,
                            cfg.features.sample_rate, workers)
        return scan_subset(root / split, labels)
    if data.source == "librispeech":
        root = Path(data.librispeech_dir or Path(data.data_dir) / "librispeech")
        if data.librispeech_dir and not root.is_dir():
            raise UserError(f"data.librispeech_dir {root} is not a directory; give the folder that holds "
                            f"LibriSpeech/<subset>, or leave it empty to download into {data.data_dir}")
        utterances: List[Utterance] = []
        report = ProblemReport()
        for subset in getattr(data, f"{split}_subsets"):
            subset_dir = prepare_subset(root, subset, data.librispeech_url, data.librispeech_md5.get(subset))
            found, problems = scan_subset(subset_dir, labels)
            utterances += found
            report.update(problems)
        return utterances, report
    given = getattr(data, f"{split}_manifest")
    if not Path(given).is_file():
        raise UserError(f"data.{split}_manifest {given!r} is not a file")
    return read_manifest(given, labels, verify_audio=True)


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
            files.write_text(path, utterance.text)
        utterance.transcript_path = str(path.resolve())


def summary_table(found: Dict[str, int], kept: Dict[str, List[Utterance]], reports: Dict[str, ProblemReport]) -> str:
    splits = list(kept)
    reasons = sorted({reason for report in reports.values() for reason in report.counts})
    corrections = sorted({reason for report in reports.values() for reason in report.corrected})
    rows = [("found", [str(found[s]) for s in splits]),
            ("kept", [str(len(kept[s])) for s in splits]),
            ("kept hours", [f"{sum(u.duration for u in kept[s]) / 3600:.2f}" for s in splits])]
    rows += [(f"skipped: {reason}", [str(reports[s].counts[reason]) for s in splits]) for reason in reasons]
    rows += [(f"corrected: {reason}", [str(reports[s].corrected[reason]) for s in splits]) for reason in corrections]
    width = max(len(name) for name, _ in rows)
    lines = [" " * width + "".join(f"{s:>10}" for s in splits)]
    lines += [name.ljust(width) + "".join(f"{value:>10}" for value in values) for name, values in rows]
    return "\n".join(lines)


_worker_cache = None  # each warm_feature_cache worker process sets its own FeatureCache here


def _cache_worker_init(cache_dir: str, feature_cfg) -> None:
    global _worker_cache
    _worker_cache = FeatureCache(cache_dir, feature_cfg)


def _cache_one(audio_path: str) -> str:
    """'' once the features of audio_path are cached, or why its audio cannot be used."""
    try:
        _worker_cache.features(audio_path)
    except AudioError as exc:
        return str(exc)
    return ""


def warm_feature_cache(utterances: List[Utterance], cfg: Config, workers: int) -> List[str]:
    """Compute every utterance's features into the cache. Audio that cannot be used (it decodes to no
    samples, or to NaN or infinite ones) is counted and named on stderr, not fatal: training and
    evaluation leave such an utterance out of its batch. Returns the problems."""
    from ds2.progress import progress

    paths = [u.audio_path for u in utterances]
    problems = []
    with Pool(workers, initializer=_cache_worker_init, initargs=(str(feature_cache_dir(cfg)), cfg.features)) as pool, \
            progress(total=len(paths), desc="computing features", unit="utt") as bar:
        for problem in pool.imap_unordered(_cache_one, paths, chunksize=16):
            if problem:
                problems.append(problem)
            bar.update(1)
    if problems:
        print(f"{len(problems)} utterances have audio that cannot be used; training and evaluation leave them "
              f"out (e.g. {'; '.join(problems[:EXAMPLES_PER_REASON])})", file=sys.stderr)
    return problems


def add_arguments(parser) -> None:
    parser.add_argument("--warm-cache", action="store_true",
                        help="compute every kept utterance's features now (train otherwise does it on first use)")
    parser.add_argument("--workers", type=count, default=0, metavar="N",
                        help="processes for speech synthesis and features (default 0: every usable core)")
    parser.add_argument("--splits", type=split_list, default=SPLITS, metavar="SPLIT,...",
                        help="only these splits, e.g. test to evaluate a downloaded model without fetching "
                             "LibriSpeech's training data (default: train,dev,test)")


def split_list(text: str) -> Tuple[str, ...]:
    """argparse type: comma-separated split names."""
    import argparse

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SPLITS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected splits among {','.join(SPLITS)}, got {text!r}")
    return names


def run(cfg: Config, args) -> int:
    from ds2.runtime import usable_cpus

    workers = args.workers or usable_cpus()
    files.hold(cfg.data.data_dir, "preprocess")
    for folder in {manifest_path(cfg, split).parent for split in SPLITS} | \
            {Path(cfg.data.data_dir) / "transcripts" / split for split in SPLITS}:
        files.sweep(folder, held=files.inside(folder, cfg.data.data_dir))
    sweep_feature_cache(cfg)
    check_window(cfg.features)
    splits = [s for s in SPLITS if s in args.splits and
              (cfg.data.source != "manifest" or getattr(cfg.data, f"{s}_manifest"))]
    if "train" in args.splits and "train" not in splits:
        raise UserError("data.source=manifest needs data.train_manifest (and usually data.dev_manifest)")
    if not splits:
        raise UserError(f"data.source=manifest and no data.<split>_manifest given for {','.join(args.splits)}")
    if cfg.data.source == "librispeech":
        check_subsets([s for split in splits for s in getattr(cfg.data, f"{split}_subsets")])
    found: Dict[str, int] = {}
    kept: Dict[str, List[Utterance]] = {}
    reports: Dict[str, ProblemReport] = {}
    for split in splits:
        utterances, report = collect_split(cfg, split, workers)
        kept[split] = filter_for_model(utterances, cfg, report)
        found[split] = len(kept[split]) + report.total
        reports[split] = report
        write_transcripts(kept[split], Path(cfg.data.data_dir) / "transcripts" / split)
        if kept[split]:
            path = manifest_path(cfg, split)
            write_json_manifest(path, kept[split], data_settings(cfg, split))
            write_csv_manifest(path.with_suffix(".csv"), kept[split])
    print(summary_table(found, kept, reports))
    for split in splits:
        if reports[split].total or reports[split].corrected:
            print(f"{split}: {reports[split]}")
    empty = [split for split in splits if not kept[split]]
    if empty:
        raise UserError(f"no usable utterances in {', '.join(empty)}: see the table above for why each was skipped")
    for split in splits:
        print(f"{split} manifest: {manifest_path(cfg, split)} (and .csv)")
    if args.warm_cache:
        warm_feature_cache([u for split in splits for u in kept[split]], cfg, workers)
    return 0
