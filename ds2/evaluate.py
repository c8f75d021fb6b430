"""`ds2 eval`: decode a split with a checkpoint and report corpus WER / CER and decoding speed.

    ds2 eval --checkpoint best --split test            # the LM ds2 tune-lm tuned for it, else greedy
    ds2 eval --checkpoint best --no-lm                 # greedy, even when an LM was tuned
    ds2 eval --checkpoint best --decoder prefix        # a decoder by name (ds2.decoders): greedy, prefix, lm
    ds2 eval --checkpoint last --split dev --beam 32 --no-lm       # prefix beam search, 32 beams
    ds2 eval --lm runs/data/lm/train-1gram.arpa --alpha 0.5 --beta -2   # this LM and these weights

The decoding flags are shorthands for the decode config section (--beam N is --set decode.beam=N),
so make and Compose pass them with SET / DS2_ARGS like any setting; ds2.inference.build_decoder
says how they combine with the settings tune-lm stored (decode.decoder=auto: the LM when there is one). The decoder is built once, before the
first utterance. Results go to <run_dir>/eval/<split>_<decoder>.jsonl (one line per utterance: id,
ref, hyp, edits) and <run_dir>/eval/<split>_<decoder>_summary.json, decoder being greedy,
beam<N> or lm, where run_dir is the directory holding the checkpoint's checkpoints/ folder. The
summary's decoding speed counts the decoder's time alone; the whole pass (model included) is
given beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

from ds2 import files
from ds2.config import Config, add_decode_options


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"],
                        help="which manifest to decode (default: test)")
    add_decode_options(parser)


def run(cfg: Config, args) -> int:
    from ds2.data.sets import load_sets
    from ds2.inference import build_decoder, evaluate_set, load_for_inference
    from ds2.runtime import configure_mindspore

    configure_mindspore(cfg)
    loaded = load_for_inference(cfg, args.checkpoint, args.overrides)
    decoder = build_decoder(cfg, loaded.cfg.model.labels, loaded.path, loaded.meta["step"])
    print(f"decoder: {decoder.description}")
    data = load_sets(loaded.cfg, [args.split])[args.split]
    result = evaluate_set(loaded.model, data, loaded.cfg, decoder)
    summary = dict(result["summary"], split=args.split, checkpoint=str(loaded.path), step=loaded.meta["step"])
    out_dir = loaded.run_dir / "eval"
    files.hold(loaded.run_dir, "eval")
    files.sweep(out_dir, held=True)
    stem = f"{args.split}_{decoder.name}"
    files.write_json_lines(out_dir / f"{stem}.jsonl", result["utterances"])
    files.write_json(out_dir / f"{stem}_summary.json", summary)
    left_out = f", {summary['left_out']} left out for bad data" if summary["left_out"] else ""
    print(f"{args.split}: {summary['utterances']} utterances{left_out}, {decoder.name}: "
          f"WER {summary['wer']:.4f}  CER {summary['cer']:.4f}  ({loaded.path})")
    print(f"decoding speed: {rate(summary['decode_utterances_per_sec'])} utterances/s in the decoder "
          f"(the whole pass, model and its graph compilations included: {rate(summary['utterances_per_sec'])})")
    print(f"wrote {out_dir / (stem + '.jsonl')} and {out_dir / (stem + '_summary.json')}")
    table = comparison(out_dir, summary)
    if table:
        print(table)
    return 0


def comparison(out_dir: Path, summary: dict) -> str:
    """A table of every decoder evaluated on the same split of the same checkpoint (and step), from
    the summaries in out_dir; empty when there is only this one."""
    rows = []
    for path in sorted(out_dir.glob(f"{summary['split']}_*_summary.json")):
        try:
            other = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            continue   # a damaged summary of another decoder: left out of the comparison, not this evaluation's
        if not isinstance(other, dict) or not all(isinstance(other.get(key), (int, float))
                                                  for key in ("wer", "cer", "decode_utterances_per_sec")):
            continue
        if (other.get("split"), other.get("checkpoint"), other.get("step")) == \
                (summary["split"], summary["checkpoint"], summary["step"]) and "decode_utterances_per_sec" in other:
            rows.append(other)
    if len(rows) < 2:
        return ""
    lines = [f"{summary['split']} set, {summary['checkpoint']} at step {summary['step']}, every decoder evaluated:",
             f"  {'decoder':<10}{'WER':>8}{'CER':>8}{'utterances/s':>14}"]
    lines += [f"  {row['decoder']:<10}{row['wer']:>8.4f}{row['cer']:>8.4f}{rate(row['decode_utterances_per_sec']):>14}"
              for row in sorted(rows, key=lambda row: row["wer"])]
    return "\n".join(lines)


def rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.1f}"
