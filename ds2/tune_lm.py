"""`ds2 tune-lm`: choose the LM weight (alpha) and word bonus (beta) on the dev set, and store them
beside the checkpoint, where `ds2 eval` and `ds2 transcribe` find them.

    ds2 tune-lm                                   # best.ckpt, the LM `ds2 lm` wrote, the default grid
    ds2 tune-lm --checkpoint last --lm other.arpa --alphas 0,0.5,1 --betas=-2,0,2 --beam 32

The model runs once over the dev set; every (alpha, beta) of the grid then decodes its outputs with
the LM (ds2.lm_decode.tune: the LM and lexicon are loaded once). The pair with the lowest dev WER
(ties: the lower CER, then the smaller alpha and beta) is written to <checkpoint>.lm.json with the
LM's path, the beam, the dev WER / CER, the greedy dev WER, the checkpoint's step and the whole
grid. Eval and transcribe use it for that checkpoint file unless told otherwise (--no-lm, --lm,
--alpha, --beta). Only dev: tuning on the test set would report a WER the decoder has not earned.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

from ds2 import decoders, files
from ds2.config import BUILT_LM, NO_LM, TUNED_LM, Config, add_shorthand, count
from ds2.errors import UserError

SPLIT = "dev"


def numbers(text: str) -> Tuple[float, ...]:
    """argparse type: a comma-separated list of numbers."""
    try:
        values = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0,0.5,1; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def add_arguments(parser) -> None:
    from ds2.lm_decode import DEFAULT_ALPHAS, DEFAULT_BEAM, DEFAULT_BETAS

    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    add_shorthand(parser, "--lm", "decode.lm", "ARPA language model to tune (default: the one ds2 lm writes for this "
                  "config, <data_dir>/lm/...)", metavar="FILE")
    add_shorthand(parser, "--beam", "decode.beam", f"beams of the search (default {DEFAULT_BEAM})", type=count,
                  metavar="N")
    parser.add_argument("--utterances", type=count, default=0, metavar="N",
                        help="tune on the first N dev utterances only (default 0: all; LibriSpeech's dev-clean "
                             "has 2703, and every pair of the grid decodes them all)")
    parser.add_argument("--alphas", type=numbers, default=DEFAULT_ALPHAS, metavar="A,A,...",
                        help=f"LM weights to try (default {','.join(f'{a:g}' for a in DEFAULT_ALPHAS)})")
    parser.add_argument("--betas", type=numbers, default=DEFAULT_BETAS, metavar="B,B,...",
                        help=f"word bonuses to try (default {','.join(f'{b:g}' for b in DEFAULT_BETAS)}; "
                             f"a list that starts with a minus is written --betas=-2,0,2)")


def grid_table(table: Sequence[Tuple[float, float, float, float]], best: Tuple[float, float]) -> str:
    """Dev WER for every pair: a row per alpha, a column per beta, the best pair starred."""
    alphas = sorted({row[0] for row in table})
    betas = sorted({row[1] for row in table})
    wer = {(alpha, beta): value for alpha, beta, value, _ in table}
    lines = [f"dev WER by alpha (rows) and beta (columns); * the best",
             "alpha \\ beta" + "".join(f"{beta:>9g}" for beta in betas)]
    for alpha in alphas:
        cells = [f"{wer[alpha, beta]:.4f}" + ("*" if (alpha, beta) == best else " ") for beta in betas]
        lines.append(f"{alpha:>12g}" + "".join(f"{cell:>9}" for cell in cells))
    return "\n".join(lines)


def run(cfg: Config, args) -> int:
    from ds2 import lm, lm_decode
    from ds2.data.sets import load_sets
    from ds2.inference import load_for_inference, log_probs_of
    from ds2.metrics import error_rates
    from ds2.progress import progress
    from ds2.runtime import configure_mindspore

    if cfg.decode.decoder != decoders.AUTO and not decoders.DECODERS[cfg.decode.decoder].needs_lm:
        raise UserError(f"tune-lm tunes the lm decoder's weights, and decode.decoder={cfg.decode.decoder} uses no "
                        f"language model: drop decode.decoder (or set it to lm)")
    if cfg.decode.lm == NO_LM:
        raise UserError("tune-lm tunes a language model, and decode.lm=none names none: give one with --lm FILE")
    lm_path = lm.lm_path_for(cfg) if cfg.decode.lm in (TUNED_LM, BUILT_LM) else cfg.decode.lm
    if not Path(lm_path).is_file():
        raise UserError(f"no language model at {lm_path}: build it with ds2 lm (make lm), or give one with --lm FILE")
    if min(args.alphas) < 0:
        raise UserError(f"--alphas: an LM weight is 0 or more, got {min(args.alphas):g}")
    beam = cfg.decode.beam or lm_decode.DEFAULT_BEAM

    configure_mindspore(cfg)
    loaded = load_for_inference(cfg, args.checkpoint, args.overrides)
    files.hold(loaded.run_dir, "tune-lm")  # the settings go beside the checkpoint, in the run's folder
    files.sweep(loaded.path.parent, held=files.inside(loaded.path, loaded.run_dir))
    labels = loaded.cfg.model.labels
    data = load_sets(loaded.cfg, [SPLIT], limit=args.utterances)[SPLIT]
    left_out: List[str] = []
    outputs = dict(log_probs_of(loaded.model, data, left_out))
    for why in left_out:
        print(f"left out (bad data): {why}", file=sys.stderr)
    order = sorted(outputs)
    log_probs = [outputs[i] for i in order]
    references = [data.utterances[i].text for i in order]
    greedy_decode = decoders.build(decoders.GREEDY, labels)
    greedy = error_rates(references, [greedy_decode(lp) for lp in log_probs])
    print(f"{SPLIT}: {len(order)} utterances; greedy WER {greedy.wer:.4f} CER {greedy.cer:.4f}; "
          f"tuning {len(args.alphas)} alphas x {len(args.betas)} betas, {beam} beams, LM {lm_path}")

    best = {"wer": float("inf")}
    with progress(total=len(args.alphas) * len(args.betas), desc="tune-lm", unit="pairs") as bar:
        def tried(alpha: float, beta: float, wer: float) -> None:
            if wer < best["wer"]:
                best.update(wer=wer, alpha=alpha, beta=beta)
            bar.set_postfix(best=f"WER {best['wer']:.4f} at alpha {best['alpha']:g} beta {best['beta']:g}")
            bar.update(1)

        result = lm_decode.tune(log_probs, references, labels, lm_path, args.alphas, args.betas, beam, progress=tried)
    print(grid_table(result.table, (result.alpha, result.beta)))
    settings = lm_decode.LmSettings(lm_path=str(lm_path), alpha=result.alpha, beta=result.beta, beam=beam)
    path = lm_decode.save_settings(loaded.path, settings, {
        "split": SPLIT, "wer": result.wer, "cer": result.cer, "greedy_wer": greedy.wer, "greedy_cer": greedy.cer,
        "utterances": len(order), "checkpoint_step": loaded.meta["step"], "seconds": round(result.seconds, 2),
        "grid": [{"alpha": a, "beta": b, "wer": w, "cer": c} for a, b, w, c in result.table]})
    print(f"best: alpha {result.alpha:g}, beta {result.beta:g}: {SPLIT} WER {result.wer:.4f} CER {result.cer:.4f} "
          f"(greedy WER {greedy.wer:.4f}); {len(result.table)} pairs in {result.seconds:.1f} s")
    print(f"wrote {path}: ds2 eval and ds2 transcribe decode {loaded.path} with it (--no-lm for greedy)")
    return 0
