"""Compare CTC decoders on saved log-probabilities: WER, CER and utterances per second.

    python bench/lm_decoders.py --dev runs/log_probs_dev.npz --test runs/log_probs_test.npz \\
        --lm runs/lm/train-1gram.arpa [--lm runs/lm/train-2gram.arpa ...] [--decoders greedy,lm,...]

Each .npz holds one split's model outputs (ds2.lm_decode.save_log_probs). Decoders: ds2's own, by their
names in ds2.decoders (built there, as ds2 eval builds them), and one from outside for comparison:
  greedy       best path (ds2.decode.greedy_decode)
  prefix       ds2's Python prefix beam search without LM (--prefix-beam beams)
  lm           flashlight-text's lexicon beam search with KenLM (ds2.lm_decode), alpha/beta tuned on dev
  pyctcdecode  pyctcdecode + kenlm (Python beam search, KenLM through its Python module), tuned on dev;
               skipped when those packages are not installed (they are not in the ds2 images)
For every decoder and LM it prints WER / CER on test, decoding speed on test in utterances per
second (one process, decoding is one thread; the median of three passes), and the (alpha, beta)
chosen on dev by the same grid for every LM; and each LM's perplexity on the dev transcripts.
Rows are measured one after another in the same run: compare them side by side.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ds2 import decoders as ds2_decoders, lm, lm_decode  # noqa: E402
from ds2.decode import DEFAULT_BEAM_WIDTH  # noqa: E402
from ds2.metrics import error_rates  # noqa: E402

# pyctcdecode weighs the LM's log10 scores converted to natural log (x ln 10): its grid is smaller.
PYCTCDECODE_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
PYCTCDECODE_BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)


REPEATS = 3   # each decoder decodes the test set this many times; the median speed is reported
PYCTCDECODE = "pyctcdecode"
DECODERS = tuple(ds2_decoders.DECODERS) + (PYCTCDECODE,)


def timed(decode: Callable[[np.ndarray], str], log_probs: Sequence[np.ndarray]):
    """(hypotheses, utterances per second: the median of REPEATS passes over the set)."""
    speeds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        hypotheses = [decode(lp) for lp in log_probs]
        speeds.append(len(log_probs) / (time.perf_counter() - started))
    return hypotheses, statistics.median(speeds)


def pyctcdecode_decoder(labels: str, lm_path: Path, alpha: float, beta: float, beam: int):
    import pyctcdecode

    tokens = ["" if i == 0 else char for i, char in enumerate(labels)]
    decoder = pyctcdecode.build_ctcdecoder(tokens, str(lm_path), alpha=alpha, beta=beta)
    return decoder, lambda lp: decoder.decode(lp, beam_width=beam)


def tune_pyctcdecode(dev, labels, lm_path, beam):
    decoder, decode = pyctcdecode_decoder(labels, lm_path, PYCTCDECODE_ALPHAS[0], PYCTCDECODE_BETAS[0], beam)
    best = None
    for alpha in PYCTCDECODE_ALPHAS:
        for beta in PYCTCDECODE_BETAS:
            decoder.reset_params(alpha=alpha, beta=beta)
            wer = error_rates(dev["references"], [decode(lp) for lp in dev["log_probs"]]).wer
            if best is None or wer < best[2]:
                best = (alpha, beta, wer)
    decoder.reset_params(alpha=best[0], beta=best[1])
    return best, decode


def row(name: str, lm: str, test, hypotheses: List[str], speed: float, chosen: str = "") -> str:
    rates = error_rates(test["references"], hypotheses)
    return f"| {name} | {lm} | {100 * rates.wer:.2f} | {100 * rates.cer:.2f} | {speed:.0f} | {chosen} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dev", required=True, type=Path)
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--lm", action="append", type=Path, default=[], help="ARPA file (repeat for several)")
    parser.add_argument("--decoders", default=",".join(DECODERS), help=f"some of {', '.join(DECODERS)}")
    parser.add_argument("--beam", type=int, default=lm_decode.DEFAULT_BEAM, help="LM decoders' beam")
    parser.add_argument("--prefix-beam", type=int, default=DEFAULT_BEAM_WIDTH)
    parser.add_argument("--beam-threshold", type=float, default=lm_decode.DEFAULT_BEAM_THRESHOLD)
    parser.add_argument("--beam-sweep", default="", metavar="N,N,...",
                        help="also decode test with these beam widths and the alpha, beta chosen on dev")
    parser.add_argument("--alphas", default=",".join(map(str, lm_decode.DEFAULT_ALPHAS)))
    parser.add_argument("--betas", default=",".join(map(str, lm_decode.DEFAULT_BETAS)))
    args = parser.parse_args(argv)
    decoders = [name for name in args.decoders.split(",") if name]
    unknown = [name for name in decoders if name not in DECODERS]
    if unknown:
        parser.error(f"--decoders: unknown {', '.join(unknown)}; choose from {', '.join(DECODERS)}")

    dev, test = lm_decode.load_log_probs(args.dev), lm_decode.load_log_probs(args.test)
    labels = test["labels"]
    print(f"dev {len(dev['references'])} utterances, test {len(test['references'])}; labels {labels!r}")
    print("| decoder | LM | test WER % | test CER % | utterances/s | alpha, beta (dev) |")
    print("|---|---|---|---|---|---|")
    if ds2_decoders.GREEDY in decoders:
        hypotheses, speed = timed(ds2_decoders.build(ds2_decoders.GREEDY, labels), test["log_probs"])
        print(row("greedy", "-", test, hypotheses, speed), flush=True)
    if ds2_decoders.PREFIX in decoders:
        hypotheses, speed = timed(ds2_decoders.build(ds2_decoders.PREFIX, labels, beam=args.prefix_beam),
                                  test["log_probs"])
        print(row(f"ds2 prefix beam {args.prefix_beam}", "-", test, hypotheses, speed), flush=True)
    alphas = [float(a) for a in args.alphas.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    for lm_path in args.lm:
        print(f"{lm_path.name}: dev perplexity {lm.perplexity(lm.read_arpa(lm_path), dev['references']):.1f}")
        if ds2_decoders.LM in decoders:
            tuned = lm_decode.tune(dev["log_probs"], dev["references"], labels, lm_path, alphas, betas, args.beam,
                                   beam_threshold=args.beam_threshold)
            decoder = ds2_decoders.build(ds2_decoders.LM, labels, beam=args.beam, lm_path=lm_path, alpha=tuned.alpha,
                                         beta=tuned.beta, beam_threshold=args.beam_threshold)
            hypotheses, speed = timed(decoder, test["log_probs"])
            print(row(f"flashlight-text beam {args.beam}", lm_path.name, test, hypotheses, speed,
                      f"{tuned.alpha:g}, {tuned.beta:g} (dev WER {100 * tuned.wer:.2f}, grid {tuned.seconds:.0f} s)"),
                  flush=True)
            for beam in (int(b) for b in args.beam_sweep.split(",") if b):
                sweep = ds2_decoders.build(ds2_decoders.LM, labels, beam=beam, lm_path=lm_path, alpha=tuned.alpha,
                                           beta=tuned.beta, beam_threshold=args.beam_threshold)
                hypotheses, speed = timed(sweep, test["log_probs"])
                print(row(f"flashlight-text beam {beam}", lm_path.name, test, hypotheses, speed,
                          f"{tuned.alpha:g}, {tuned.beta:g} as above"), flush=True)
        if PYCTCDECODE in decoders:
            try:
                (alpha, beta, wer), decode = tune_pyctcdecode(dev, labels, lm_path, args.beam)
            except ImportError as exc:
                print(f"| pyctcdecode | {lm_path.name} | not installed ({exc}) | | | |")
                continue
            hypotheses, speed = timed(decode, test["log_probs"])
            print(row(f"pyctcdecode beam {args.beam}", lm_path.name, test, hypotheses, speed,
                      f"{alpha:g}, {beta:g} (dev WER {100 * wer:.2f})"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
