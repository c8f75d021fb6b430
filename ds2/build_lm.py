"""`ds2 lm`: the word n-gram language model that tune-lm, eval and transcribe decode with.

    ds2 lm                                # from the training transcripts, order lm.order
    ds2 lm --order 3                      # the same as --set lm.order=3
    ds2 lm --official                     # LibriSpeech's official 3-gram.pruned.1e-7.arpa.gz
    ds2 lm --official 4-gram.arpa.gz      # another official one (--set lm.official=...)

Built: interpolated modified Kneser-Ney (ds2.lm) over the transcripts of the train manifest only,
never dev or test (the dev perplexity and the dev and test WERs would flatter it otherwise). The
embedded preset builds order 1: its sentences are words drawn independently of each other, and
higher orders measured worse on dev (docs/language-model.md). Written to
<data_dir>/lm/train-<order>gram.arpa (ds2.lm.lm_path_for; --output for elsewhere).

Official (lm.official, the seed preset's default): downloaded into <data_dir>/lm/ from lm.url,
by default the corpus mirror's OpenSLR resource 11 (LibriSpeech's LMs) beside its resource 12
(the corpus), resumed after an interruption and MD5-checked like the corpus (against lm.md5 when
set, else the built-in table); a file already there is used as it is.

Then it prints the model's perplexity on the dev transcripts and the share of dev words it does
not know (the lexicon decoder cannot produce those at all), when a dev manifest exists.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ds2 import files
from ds2.config import DEFAULT_OFFICIAL_LM, Config, add_shorthand, count
from ds2.errors import UserError


def add_arguments(parser) -> None:
    add_shorthand(parser, "--order", "lm.order", "n-gram order of the model built from the training transcripts",
                  type=count, metavar="N")
    add_shorthand(parser, "--official", "lm.official", f"download LibriSpeech's official LM NAME instead "
                  f"(default {DEFAULT_OFFICIAL_LM})", nargs="?", const=DEFAULT_OFFICIAL_LM, metavar="NAME")
    parser.add_argument("--output", metavar="PATH",
                        help="where to write the model built from transcripts (default: <data_dir>/lm/"
                             "train-<order>gram.arpa, where tune-lm looks for it)")


def run(cfg: Config, args) -> int:
    from ds2 import lm
    from ds2.data.sets import manifest_path, read_split

    files.hold(cfg.data.data_dir, "lm")
    files.sweep(lm.lm_dir(cfg), held=True)
    if cfg.lm.official:
        if args.output:
            raise UserError(f"--output is for a model built from transcripts; the official {cfg.lm.official} "
                            f"goes to {lm.lm_dir(cfg)}")
        path = lm.lm_dir(cfg) / cfg.lm.official
        found = path.is_file()
        path = lm.download_official_lm(cfg.lm.official, lm.lm_dir(cfg), lm.official_lm_url(cfg), cfg.lm.md5)
        how = "already there" if found else f"downloaded from {lm.official_lm_url(cfg)}, MD5 checked"
        print(f"LibriSpeech's official LM {cfg.lm.official}: {path} ({path.stat().st_size / 1e6:.1f} MB, {how})")
    else:
        path = Path(args.output) if args.output else lm.lm_path_for(cfg)
        sentences = [u.text for u in read_split(cfg, "train")]
        model = lm.build_arpa(sentences, cfg.lm.order, path)
        words = [word for sentence in sentences for word in sentence.split()]
        print(f"built a {cfg.lm.order}-gram LM from the {len(sentences)} transcripts of "
              f"{manifest_path(cfg, 'train')} ({len(words)} words, {len(set(words))} distinct): {path}")
        print(lm.describe(model))

    if not manifest_path(cfg, "dev").is_file():
        print(f"no dev manifest at {manifest_path(cfg, 'dev')}: no dev perplexity (ds2 preprocess writes one)")
        return 0
    dev = [u.text for u in read_split(cfg, "dev")]
    if cfg.lm.official:   # LibriSpeech's models are large: say what takes the time
        print(f"dev perplexity: reading the n-grams of the dev words from {path} ...", file=sys.stderr)
    perplexity, unknown, total = lm.perplexity_of_file(path, dev)
    print(f"dev perplexity {perplexity:.1f} over {len(dev)} transcripts; {unknown} of their {total} words "
          f"({100.0 * unknown / max(total, 1):.1f} %) are not in the LM (beam search with it cannot produce those)")
    return 0
