"""Write a checkpoint's log-probabilities of the dev and test sets to .npz files, for bench/lm_decoders.py.

    python bench/dump_log_probs.py [--checkpoint best] [--preset small] [--out runs]

One file per split, <out>/log_probs_<split>.npz (ds2.lm_decode.save_log_probs): the model runs
once, the decoders then run on the files as often as needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from ds2.config import load_config
    from ds2.data.sets import load_sets
    from ds2.inference import load_for_inference, log_probs_of
    from ds2.lm_decode import save_log_probs
    from ds2.runtime import configure_mindspore

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--out", default="runs", type=Path)
    parser.add_argument("--splits", default="dev,test")
    args = parser.parse_args(argv)
    cfg = load_config(args.preset)
    configure_mindspore(cfg)
    loaded = load_for_inference(cfg, args.checkpoint, [])
    for split in args.splits.split(","):
        data = load_sets(loaded.cfg, [split])[split]
        outputs = dict(log_probs_of(loaded.model, data, []))
        order = sorted(outputs)
        path = save_log_probs(args.out / f"log_probs_{split}.npz", [outputs[i] for i in order],
                              [data.utterances[i].text for i in order], [data.utterances[i].id for i in order],
                              loaded.cfg.model.labels)
        print(f"{split}: {len(order)} utterances -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
