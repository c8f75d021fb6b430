"""`ds2 transcribe --checkpoint PATH|best|last AUDIO [AUDIO ...]`: print a transcript per file.

Features are computed with the feature config stored in the checkpoint; any sample rate is
resampled to it. Decoding is eval's (the LM ds2 tune-lm stored beside the checkpoint, else greedy;
--decoder, --beam, --lm, --no-lm, --alpha, --beta as for ds2 eval), built once for all the files. Output: one
line per file on stdout, "<path>\t<transcript>"; the decoder's description goes to stderr.
"""
from __future__ import annotations

import sys

from ds2.config import Config, add_decode_options

# Inputs are zero-padded up to a whole number of these seconds so that files of similar length
# share one compiled graph; the model masks padding, so it does not change the transcript.
PAD_TO_SECONDS = 1.0


def add_arguments(parser) -> None:
    parser.add_argument("audio", nargs="+", help="audio files (anything libsndfile reads: wav, flac, ...)")
    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    add_decode_options(parser)


def run(cfg: Config, args) -> int:
    import mindspore as ms
    import numpy as np

    from ds2.features import AudioError, compute_features, load_audio
    from ds2.inference import build_decoder, load_for_inference
    from ds2.runtime import configure_mindspore

    configure_mindspore(cfg)
    loaded = load_for_inference(cfg, args.checkpoint, args.overrides)
    model, stored = loaded.model, loaded.cfg
    decoder = build_decoder(cfg, stored.model.labels, loaded.path, loaded.meta["step"])
    print(f"decoder: {decoder.description}", file=sys.stderr)
    failed = 0
    for path in args.audio:
        try:
            features = compute_features(load_audio(path, stored.features.sample_rate), stored.features)
        except AudioError as exc:
            print(f"ds2 transcribe: {exc}", file=sys.stderr)
            failed += 1
            continue
        frames = features.shape[1]
        step = int(round(PAD_TO_SECONDS * stored.features.sample_rate / stored.features.hop_length))
        padded = np.zeros((1, 1, features.shape[0], -(-frames // step) * step), dtype=np.float32)
        padded[0, 0, :, :frames] = features
        log_probs, lengths = model(ms.Tensor(padded), ms.Tensor(np.array([frames], dtype=np.int32)))
        length = int(lengths.asnumpy()[0])
        text = decoder.decode(log_probs.asnumpy()[:length, 0])
        print(f"{path}\t{text}")
    return 1 if failed else 0
