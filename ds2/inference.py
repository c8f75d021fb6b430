"""A trained model at work: load it from a checkpoint, run it over a split, decode and score.

Used by `ds2 eval` and `ds2 transcribe`, and by `ds2 train` for its dev evaluations. The model's
features, labels and architecture come from the config stored in the checkpoint (with the command's
--set overrides on top, e.g. to point at another manifest), so a run is evaluated the way it was trained.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Sequence, Tuple

import numpy as np

from ds2 import checkpoint
from ds2.config import Config, with_overrides
from ds2.errors import UserError


class LoadedModel(NamedTuple):
    model: Any              # DeepSpeech2 in eval mode
    cfg: Config             # the checkpoint's config, with this command's overrides
    path: Path              # the checkpoint file
    run_dir: Path           # the run it belongs to (eval results go under it)
    meta: Dict[str, Any]    # the checkpoint's meta (step, position, metrics, ...)


def load_for_inference(cfg: Config, which: str, overrides: Sequence[str]) -> LoadedModel:
    """Model and config from checkpoint `which` (a path, or best / last of cfg.run_dir).

    MindSpore must be set up first (ds2.runtime.configure_mindspore).
    """
    from ds2.model import DeepSpeech2

    path = checkpoint.resolve(cfg.run_dir, which)
    try:
        values, meta = checkpoint.load(path)
    except checkpoint.CorruptCheckpoint as exc:
        raise UserError(f"{exc}; use another checkpoint of the run (--checkpoint last, or a step-N.ckpt file)") from None
    stored = with_overrides(meta["config"], overrides)
    model = DeepSpeech2(stored.model, stored.features.n_bins)
    try:
        checkpoint.restore(values, model)
    except ValueError as exc:
        raise UserError(f"{path} does not fit the model its config describes ({exc}); check it with "
                        f"python -m envcheck --checkpoint {path}") from None
    model.set_train(False)
    run_dir = path.resolve().parent.parent if path.resolve().parent.name == "checkpoints" else Path(cfg.run_dir)
    return LoadedModel(model, stored, path, run_dir, meta)


def log_probs_of(model, data, left_out: List[str]) -> Iterator[Tuple[int, np.ndarray]]:
    """(utterance index, log-probabilities [frames, labels] of its real frames) for every utterance.

    The model must be in eval mode; batches are the set's length buckets, in order. Utterances whose
    data is bad are not yielded; `left_out` receives one line for each.
    """
    import mindspore as ms

    from ds2.batching import Prefetcher

    sampler = data.sampler(seed=0, shuffle=False)
    prefetch = Prefetcher(sampler.epoch(0), data.loader(sampler))
    try:
        for padded in prefetch:
            left_out.extend(why for _, why in padded.left_out)
            if not padded.indices:
                continue
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

    hypotheses, left_out = {}, []
    for index, log_probs in log_probs_of(model, data, left_out):
        hypotheses[index] = decode_one(log_probs, cfg.model.labels, beam)
    for why in left_out:
        print(f"left out (bad data): {why}", file=sys.stderr)
    order = sorted(hypotheses)
    references = [data.utterances[i].text for i in order]
    rates = error_rates(references, [hypotheses[i] for i in order])
    utterances = [{"id": data.utterances[i].id, "ref": ref, "hyp": hypotheses[i],
                   "char_edits": errors.char_edits, "chars": errors.chars,
                   "word_edits": errors.word_edits, "words": errors.words}
                  for i, ref, errors in zip(order, references, rates.per_utterance)]
    summary = {"wer": rates.wer, "cer": rates.cer, "word_edits": rates.word_edits, "words": rates.words,
               "char_edits": rates.char_edits, "chars": rates.chars, "utterances": len(order),
               "left_out": len(left_out), "decoder": f"beam{beam}" if beam > 0 else "greedy"}
    return {"summary": summary, "utterances": utterances}
