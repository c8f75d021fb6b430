"""`ds2 eval`: decode a split with a checkpoint and report corpus WER / CER.

    ds2 eval --checkpoint best --split test            # greedy
    ds2 eval --checkpoint last --split dev --beam 32   # prefix beam search, 32 beams

The model's features, labels and architecture come from the config stored in the checkpoint
(command-line --set overrides are applied on top, e.g. to point at another manifest), so a run
is evaluated the way it was trained. Results go to <run_dir>/eval/<split>.jsonl (one line per
utterance: id, ref, hyp, edits) and <run_dir>/eval/<split>_summary.json, where run_dir is the
directory holding the checkpoint's checkpoints/ folder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from ds2 import checkpoint
from ds2.config import Config, apply_override, from_dict


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"],
                        help="which manifest to decode (default: test)")
    parser.add_argument("--beam", type=int, default=0, metavar="N",
                        help="prefix beam search with N beams instead of greedy decoding")


class LoadedModel(NamedTuple):
    model: Any              # DeepSpeech2 in eval mode
    cfg: Config             # the checkpoint's config, with this command's overrides
    path: Path              # the checkpoint file
    run_dir: Path           # the run it belongs to (eval results go under it)
    meta: Dict[str, Any]    # the checkpoint's meta (step, position, metrics, ...)


def load_for_inference(cfg: Config, which: str, overrides: List[str]) -> LoadedModel:
    """Model and config from checkpoint `which` (a path, or best / last of cfg.run_dir)."""
    from ds2.model import DeepSpeech2

    path = checkpoint.resolve(cfg.run_dir, which)
    values, meta = checkpoint.load(path)
    stored = from_dict(meta["config"])
    for override in overrides:
        apply_override(stored, override)
    model = DeepSpeech2(stored.model, stored.features.n_bins)
    checkpoint.restore(values, model)
    model.set_train(False)
    run_dir = path.resolve().parent.parent if path.resolve().parent.name == "checkpoints" else Path(cfg.run_dir)
    return LoadedModel(model, stored, path, run_dir, meta)


def log_probs_of(model, data) -> Iterator[Tuple[int, np.ndarray]]:
    """(utterance index, log-probabilities [frames, labels] of its real frames) for every utterance.

    The model must be in eval mode; batches are the set's length buckets, in order.
    """
    import mindspore as ms

    from ds2.batching import Prefetcher

    sampler = data.sampler(seed=0, shuffle=False)
    prefetch = Prefetcher(sampler.epoch(0), data.loader(sampler))
    try:
        for padded in prefetch:
            log_probs, lengths = model(ms.Tensor(padded.features), ms.Tensor(padded.frames))
            log_probs, lengths = log_probs.asnumpy(), lengths.asnumpy()
            for row, index in enumerate(padded.indices):
                yield index, log_probs[:lengths[row], row]
    finally:
        prefetch.close()


def decode_one(log_probs: np.ndarray, labels: str, beam: int) -> str:
    from ds2.decode import beam_search_decode, greedy_decode

    if beam > 0:
        return beam_search_decode(log_probs, len(log_probs), labels, beam_width=beam)
    return greedy_decode(log_probs, len(log_probs), labels)


def evaluate_set(model, data, cfg: Config, beam: int = 0) -> Dict[str, Any]:
    """Decode every utterance of `data` (an UtteranceSet); per-utterance results and a summary."""
    from ds2.metrics import error_rates

    hypotheses = {}
    for index, log_probs in log_probs_of(model, data):
        hypotheses[index] = decode_one(log_probs, cfg.model.labels, beam)
    order = sorted(hypotheses)
    references = [data.utterances[i].text for i in order]
    rates = error_rates(references, [hypotheses[i] for i in order])
    utterances = [{"id": data.utterances[i].id, "ref": ref, "hyp": hypotheses[i],
                   "char_edits": errors.char_edits, "chars": errors.chars,
                   "word_edits": errors.word_edits, "words": errors.words}
                  for i, ref, errors in zip(order, references, rates.per_utterance)]
    summary = {"wer": rates.wer, "cer": rates.cer, "word_edits": rates.word_edits, "words": rates.words,
               "char_edits": rates.char_edits, "chars": rates.chars, "utterances": len(order),
               "decoder": f"beam{beam}" if beam > 0 else "greedy"}
    return {"summary": summary, "utterances": utterances}


def load_for_command(cfg: Config, args, command: str) -> Optional[LoadedModel]:
    """MindSpore set up and args.checkpoint loaded for `ds2 <command>`, or None after saying why."""
    from ds2.train import configure_mindspore

    configure_mindspore(cfg)
    try:
        return load_for_inference(cfg, args.checkpoint, args.overrides)
    except (FileNotFoundError, ValueError) as exc:
        print(f"ds2 {command}: {exc}", file=sys.stderr)
        return None


def run(cfg: Config, args) -> int:
    from ds2.train import load_sets

    loaded = load_for_command(cfg, args, "eval")
    if loaded is None:
        return 1
    data = load_sets(loaded.cfg, [args.split])[args.split]
    result = evaluate_set(loaded.model, data, loaded.cfg, args.beam)
    summary = dict(result["summary"], split=args.split, checkpoint=str(loaded.path), step=loaded.meta["step"])
    out_dir = loaded.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{args.split}.jsonl", "w") as f:
        for record in result["utterances"]:
            f.write(json.dumps(record) + "\n")
    (out_dir / f"{args.split}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.split}: {summary['utterances']} utterances, {summary['decoder']}: "
          f"WER {summary['wer']:.4f}  CER {summary['cer']:.4f}  ({loaded.path})")
    print(f"wrote {out_dir / (args.split + '.jsonl')} and {out_dir / (args.split + '_summary.json')}")
    return 0
