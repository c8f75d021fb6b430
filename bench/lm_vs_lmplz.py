"""Compare ds2.lm's modified Kneser-Ney models with KenLM's lmplz on the same text.

    python bench/lm_vs_lmplz.py --lmplz /path/to/lmplz --text train.txt [--orders 2,3,4]

lmplz is not in the ds2 images (it is a C++ program with Boost dependencies); build it from the
kenlm source package to run this. For each order it builds both models (lmplz with
--discount_fallback, the discounts ds2.lm falls back to as well) and prints how many n-grams only
one of them lists and the largest difference in log10 probability and in log10 backoff.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ds2 import lm  # noqa: E402


def compare(ours: lm.NgramModel, theirs: lm.NgramModel):
    only_one, worst_probability, worst_backoff = 0, 0.0, 0.0
    for n in range(ours.order):
        both = set(ours.probabilities[n]) & set(theirs.probabilities[n])
        only_one += len(set(ours.probabilities[n]) ^ set(theirs.probabilities[n]))
        for ngram in both - {(lm.SENTENCE_START,)}:   # <s> is never predicted: both write a placeholder
            worst_probability = max(worst_probability,
                                    abs(ours.probabilities[n][ngram] - theirs.probabilities[n][ngram]))
            worst_backoff = max(worst_backoff,
                                abs(ours.backoffs[n].get(ngram, 0.0) - theirs.backoffs[n].get(ngram, 0.0)))
    return only_one, worst_probability, worst_backoff


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lmplz", required=True, help="path of KenLM's lmplz")
    parser.add_argument("--text", required=True, type=Path, help="one sentence per line")
    parser.add_argument("--orders", default="2,3,4")
    args = parser.parse_args(argv)
    sentences = args.text.read_text().splitlines()
    print(f"{args.text}: {len(sentences)} sentences")
    print("| order | n-grams | listed by one only | max log10 p difference | max log10 backoff difference | ds2.lm fallback orders |")
    print("|---|---|---|---|---|---|")
    for order in (int(o) for o in args.orders.split(",")):
        ours = lm.kneser_ney(sentences, order)
        with tempfile.TemporaryDirectory() as scratch:
            arpa = Path(scratch) / "lmplz.arpa"
            with open(args.text, "rb") as text, open(arpa, "wb") as out:
                subprocess.run([args.lmplz, "-o", str(order), "--discount_fallback", "-S", "10%", "-T", scratch],
                               stdin=text, stdout=out, stderr=subprocess.DEVNULL, check=True)
            theirs = lm.read_arpa(arpa)
        only_one, worst_probability, worst_backoff = compare(ours, theirs)
        count = sum(len(p) for p in ours.probabilities)
        print(f"| {order} | {count} | {only_one} | {worst_probability:.1e} | {worst_backoff:.1e} | {ours.fallback_orders} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
