"""A trained model at work: load it from a checkpoint, run it over a split, decode and score.

Used by `ds2 eval`, `ds2 transcribe` and `ds2 tune-lm`, and by `ds2 train` for its dev evaluations.
The model's features, labels and architecture come from the config stored in the checkpoint (with
the command's --set overrides on top, e.g. to point at another manifest), so a run is evaluated the
way it was trained. How its outputs are decoded comes from the command's decode settings and the
LM settings `ds2 tune-lm` stored beside the checkpoint (build_decoder, from ds2.decoders' registry).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ds2 import decoders
from ds2.checkpoint import storage
from ds2.config import BUILT_LM, NO_LM, TUNED_LM, Config, with_overrides
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

    path = storage.resolve(cfg.run_dir, which)
    values, meta = storage.load(path)   # a damaged file is a CorruptCheckpoint naming it and what to use instead
    stored = with_overrides(meta["config"], overrides)
    model = DeepSpeech2(stored.model, stored.features.n_bins)
    try:
        storage.restore(values, model)
    except ValueError as exc:
        raise UserError(f"{path} does not fit the model its config describes ({exc}); check it with "
                        f"python -m envcheck --checkpoint {path}") from None
    model.set_train(False)
    if stored.train.shapes == "dynamic":    # one compiled graph for every batch shape, as in training
        from ds2.step import dynamic_inputs
        inputs = dynamic_inputs(stored.features.n_bins)
        model.set_inputs(inputs["features"], inputs["frames"])
    return LoadedModel(model, stored, path, storage.run_folder(path, cfg.run_dir), meta)


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


class Decoder(NamedTuple):
    decode: Callable[[np.ndarray], str]   # [frames, labels] log-probabilities -> transcript
    kind: str                             # its name in ds2.decoders.DECODERS: greedy, prefix or lm
    name: str                             # greedy, beam<N> or lm: names eval's result files
    description: str                      # one line for the user: what decodes, with which settings
    settings: Dict[str, Any]              # the same for the eval summary


def greedy_decoder(labels: str) -> Decoder:
    return Decoder(decoders.build(decoders.GREEDY, labels), decoders.GREEDY, "greedy", "greedy (best path)",
                   {"decoder": "greedy"})


def _decoder_without_lm(kind: str, labels: str, beam: int) -> Decoder:
    """The greedy or the prefix decoder (beam 0: its default width), named as eval's files name it."""
    from ds2.decode import DEFAULT_BEAM_WIDTH

    if kind == decoders.GREEDY:
        return greedy_decoder(labels)
    beam = beam or DEFAULT_BEAM_WIDTH
    return Decoder(decoders.build(decoders.PREFIX, labels, beam=beam), decoders.PREFIX, f"beam{beam}",
                   f"prefix beam search, {beam} beams, no LM", {"decoder": f"beam{beam}", "beam": beam})


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _lm_path(lm: str, cfg: Config, tuned) -> Optional[str]:
    """The LM file a decode.lm value names (None: no LM): a file, none, built (the LM `ds2 lm` writes for
    cfg) or tuned (the one `ds2 tune-lm` stored beside the checkpoint, if any)."""
    from ds2.lm import lm_path_for

    if lm == NO_LM:
        return None
    if lm == TUNED_LM:
        return tuned.lm_path if tuned else None
    if lm == BUILT_LM:
        return str(lm_path_for(cfg))
    return lm


def build_decoder(cfg: Config, labels: str, checkpoint_path: Path, checkpoint_step: Optional[int] = None,
                  name: Optional[str] = None) -> Decoder:
    """The decoder cfg.decode asks for (cfg: the command's own config), built once for a whole command.

    decode.decoder names it (ds2.decoders); auto: lm when decode.lm gives an LM, else prefix when
    decode.beam > 0, else greedy. decode.lm: a file; none; built: the LM `ds2 lm` writes for cfg; or
    tuned: the LM `ds2 tune-lm` stored beside the checkpoint (no LM if it stored none). alpha, beta and
    the beam are the ones given, else the tuned ones when the LM is the tuned one, else the defaults.
    A setting that contradicts the decoder (--alpha without an LM, an LM file or a beam for greedy) is a
    UserError.

    name: build that decoder instead, with the settings that apply to it (`ds2 serve` offers each one
    to its requests): the LM settings are left out for a decoder that uses no LM.
    """
    from ds2 import lm_decode

    decode = cfg.decode
    if name is not None and name != decode.decoder:
        kind = decoders.DECODERS[name]
        decode = dataclasses.replace(decode, decoder=name, **({} if kind.needs_lm else dict(lm=NO_LM, alpha=None,
                                                                                            beta=None)),
                                     **({} if kind.uses_beam else dict(beam=0)))
    weighed = decode.alpha is not None or decode.beta is not None
    if decode.decoder != decoders.AUTO and not decoders.DECODERS[decode.decoder].needs_lm:
        if decode.beam and not decoders.DECODERS[decode.decoder].uses_beam:
            raise UserError(f"decode.decoder={decode.decoder} takes no beam width, and --beam (decode.beam) gives "
                            f"{decode.beam}: drop one or the other")
        if decode.lm not in (TUNED_LM, NO_LM):
            raise UserError(f"decode.decoder={decode.decoder} decodes without a language model, and decode.lm="
                            f"{decode.lm} names one: drop one or the other")
        if weighed:
            raise UserError(f"--alpha / --beta (decode.alpha, decode.beta) weigh a language model, and decode.decoder="
                            f"{decode.decoder} decodes without one: drop one or the other")
        return _decoder_without_lm(decode.decoder, labels, decode.beam)

    tuned = lm_decode.load_settings(checkpoint_path)
    lm_path = _lm_path(decode.lm, cfg, tuned)
    kind = decoders.chosen(decode.decoder, lm_path is not None, decode.beam)
    if lm_path is None:
        if kind == decoders.LM:
            if decode.lm == NO_LM:
                raise UserError("decode.decoder=lm decodes with a language model, and --no-lm (decode.lm=none) turns "
                                "it off: drop one or the other")
            raise UserError(f"decode.decoder=lm decodes with a language model, and there is none: give one with "
                            f"--lm FILE, or tune one for {checkpoint_path} with ds2 tune-lm")
        if weighed:
            if decode.lm == NO_LM:
                raise UserError("--alpha / --beta (decode.alpha, decode.beta) weigh a language model, and --no-lm "
                                "(decode.lm=none) turns it off: drop one or the other")
            raise UserError(f"--alpha / --beta (decode.alpha, decode.beta) weigh a language model, and there is none: "
                            f"give one with --lm FILE, or tune one for {checkpoint_path} with ds2 tune-lm")
        return _decoder_without_lm(kind, labels, decode.beam)

    if not Path(lm_path).is_file():
        if decode.lm == TUNED_LM:
            raise UserError(f"the LM tuned for {checkpoint_path} is gone ({lm_path}, named in "
                            f"{lm_decode.settings_path(checkpoint_path)}): rebuild it with ds2 lm, or decode without "
                            f"it (--no-lm)")
        raise UserError(f"no language model at {lm_path}: build one with ds2 lm, or give another --lm FILE")
    use_tuned = tuned is not None and _same_file(tuned.lm_path, lm_path)
    weights, sources = {}, {}
    for weight, default in (("alpha", lm_decode.DEFAULT_ALPHA), ("beta", lm_decode.DEFAULT_BETA)):
        given = getattr(decode, weight)
        weights[weight], sources[weight] = ((given, "given") if given is not None else
                                            (getattr(tuned, weight), "tuned") if use_tuned else (default, "default"))
    beam = decode.beam or (tuned.beam if use_tuned else lm_decode.DEFAULT_BEAM)
    decoder = decoders.build(decoders.LM, labels, beam=beam, lm_path=lm_path, alpha=weights["alpha"],
                             beta=weights["beta"])

    notes = []
    if "tuned" in sources.values():
        details = lm_decode.settings_details(checkpoint_path)
        if "wer" in details:
            notes.append(f"tuned on {details.get('split', 'dev')}: WER {details['wer']:.4f}")
        tuned_step = details.get("checkpoint_step")
        if checkpoint_step is not None and tuned_step is not None and tuned_step != checkpoint_step:
            notes.append(f"tuned for this checkpoint's step {tuned_step}, it is now step {checkpoint_step}: "
                         f"ds2 tune-lm again to retune")
    if "default" in sources.values():
        notes.append("defaults: ds2 tune-lm tunes them for this LM")
    if decoder.skipped_words:
        notes.append(f"{decoder.skipped_words} LM words the labels cannot spell left out")
    description = (f"LM beam search, {beam} beams, {lm_path}, alpha {weights['alpha']:g} ({sources['alpha']}), "
                   f"beta {weights['beta']:g} ({sources['beta']})" + "".join(f"; {n}" for n in notes))
    return Decoder(decoder, decoders.LM, "lm", description,
                   {"decoder": "lm", "beam": beam, "lm": str(lm_path), "alpha": weights["alpha"],
                    "beta": weights["beta"], "alpha_from": sources["alpha"], "beta_from": sources["beta"]})


def evaluate_set(model, data, cfg: Config, decoder: Optional[Decoder] = None) -> Dict[str, Any]:
    """Decode every utterance of `data` (an UtteranceSet) with decoder (default: greedy);
    per-utterance results and a summary with both the decoding speed (utterances per second
    spent in the decoder alone) and the whole pass's (the model too)."""
    from ds2.metrics import error_rates

    decoder = decoder or greedy_decoder(cfg.model.labels)
    hypotheses, left_out = {}, []
    decode_seconds = 0.0
    started = time.perf_counter()
    for index, log_probs in log_probs_of(model, data, left_out):
        decode_started = time.perf_counter()
        hypotheses[index] = decoder.decode(log_probs)
        decode_seconds += time.perf_counter() - decode_started
    total_seconds = time.perf_counter() - started
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
               "left_out": len(left_out), **decoder.settings,
               "decode_seconds": round(decode_seconds, 4),
               "decode_utterances_per_sec": round(len(order) / max(decode_seconds, 1e-9), 1),
               "utterances_per_sec": round(len(order) / max(total_seconds, 1e-9), 1)}
    return {"summary": summary, "utterances": utterances}
