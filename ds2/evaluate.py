"""`ds2 eval`: decode a split with a checkpoint and report corpus WER / CER.

    ds2 eval --checkpoint best --split test            # greedy
    ds2 eval --checkpoint last --split dev --beam 32   # prefix beam search, 32 beams

Results go to <run_dir>/eval/<split>.jsonl (one line per utterance: id, ref, hyp, edits) and
<run_dir>/eval/<split>_summary.json, where run_dir is the directory holding the checkpoint's
checkpoints/ folder. See ds2.inference for how the model is loaded and decoded.
"""
from __future__ import annotations

import json

from ds2.config import Config, count


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"],
                        help="which manifest to decode (default: test)")
    parser.add_argument("--beam", type=count, default=0, metavar="N",
                        help="prefix beam search with N beams instead of greedy decoding")


def run(cfg: Config, args) -> int:
    from ds2.data.sets import load_sets
    from ds2.inference import evaluate_set, load_for_inference
    from ds2.runtime import configure_mindspore

    configure_mindspore(cfg)
    loaded = load_for_inference(cfg, args.checkpoint, args.overrides)
    data = load_sets(loaded.cfg, [args.split])[args.split]
    result = evaluate_set(loaded.model, data, loaded.cfg, args.beam)
    summary = dict(result["summary"], split=args.split, checkpoint=str(loaded.path), step=loaded.meta["step"])
    out_dir = loaded.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{args.split}.jsonl", "w") as f:
        for record in result["utterances"]:
            f.write(json.dumps(record) + "\n")
    (out_dir / f"{args.split}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    left_out = f", {summary['left_out']} left out for bad data" if summary["left_out"] else ""
    print(f"{args.split}: {summary['utterances']} utterances{left_out}, {summary['decoder']}: "
          f"WER {summary['wer']:.4f}  CER {summary['cer']:.4f}  ({loaded.path})")
    print(f"wrote {out_dir / (args.split + '.jsonl')} and {out_dir / (args.split + '_summary.json')}")
    return 0
