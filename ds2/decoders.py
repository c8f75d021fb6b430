"""The decoders, by name: what each one is, what it needs and how it is built.

    decode = build("prefix", labels, beam=16)
    text = decode(log_probs)              # log_probs: [frames, labels], natural log, one utterance

decode.decoder names one of DECODERS (--decoder NAME on eval, transcribe and serve); ds2.inference
turns the command's decode settings into the arguments of build(). `ds2 eval`, `ds2 transcribe`,
`ds2 tune-lm`, `ds2 serve` and bench/lm_decoders.py all build their decoders here, so a new decoder is
one entry of DECODERS (and, if it needs more than a beam width and an LM, an argument of build()).

The default, auto, is the choice ds2 made before decoders had names: lm whenever a language model is
in use (decode.lm), else prefix when decode.beam > 0, else greedy (`chosen`).

ds2.config lists the same names (DECODER_NAMES, checked against DECODERS by tests/test_decoders.py): it
validates decode.decoder without importing the decoders, as envcheck needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from ds2.config import AUTO_DECODER as AUTO

GREEDY, PREFIX, LM = "greedy", "prefix", "lm"

Decode = Callable[..., str]   # log_probs [frames, labels] -> transcript


def _greedy(labels: str, **_) -> Decode:
    from ds2.decode import greedy_decode

    return lambda log_probs: greedy_decode(log_probs, len(log_probs), labels)


def _prefix(labels: str, beam: int = 0, **_) -> Decode:
    from ds2.decode import DEFAULT_BEAM_WIDTH, beam_search_decode

    width = beam or DEFAULT_BEAM_WIDTH
    return lambda log_probs: beam_search_decode(log_probs, len(log_probs), labels, beam_width=width)


def _lm(labels: str, beam: int = 0, lm_path: Optional[str] = None, alpha: Optional[float] = None,
        beta: Optional[float] = None, **options) -> Decode:
    from ds2 import lm_decode

    return lm_decode.LmDecoder(labels, lm_path,
                               lm_decode.DEFAULT_ALPHA if alpha is None else alpha,
                               lm_decode.DEFAULT_BETA if beta is None else beta,
                               beam or lm_decode.DEFAULT_BEAM, **options)


@dataclass(frozen=True)
class DecoderKind:
    name: str
    summary: str                 # one line for help texts and the docs
    needs_lm: bool               # build() needs lm_path (and takes alpha, beta)
    uses_beam: bool              # build() reads beam (0: the decoder's own default width)
    build: Callable[..., Decode]


DECODERS: Dict[str, DecoderKind] = {kind.name: kind for kind in (
    DecoderKind(GREEDY, "the most likely label per frame, repeats and blanks removed", False, False, _greedy),
    DecoderKind(PREFIX, "CTC prefix beam search over letters, no language model (ds2.decode)", False, True, _prefix),
    DecoderKind(LM, "lexicon beam search with a KenLM word n-gram model (flashlight-text, ds2.lm_decode)",
                True, True, _lm),
)}


def chosen(name: str, has_lm: bool, beam: int) -> str:
    """The decoder decode.decoder=`name` means: itself, or for auto lm with an LM, else prefix with
    beams (decode.beam > 0), else greedy."""
    if name != AUTO:
        return name
    return LM if has_lm else PREFIX if beam > 0 else GREEDY


def build(name: str, labels: str, beam: int = 0, lm_path: Optional[str] = None, alpha: Optional[float] = None,
          beta: Optional[float] = None, **options) -> Decode:
    """Decoder `name` for these labels. beam 0: the decoder's default width; alpha, beta None: the
    LM decoder's defaults; options: the LM decoder's search options (token_beam, beam_threshold)."""
    kind = DECODERS[name]
    if kind.needs_lm and lm_path is None:
        raise ValueError(f"the {name} decoder needs a language model (lm_path)")
    return kind.build(labels, beam=beam, lm_path=lm_path, alpha=alpha, beta=beta, **options)
