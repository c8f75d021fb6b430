"""The served model: a checkpoint's model compiled once for every batch shape, run on batches of uploaded
features, each utterance decoded with the decoder its request asked for.

All MindSpore work (the warm-up compile and every batch) happens on the batcher's one worker thread.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple

import numpy as np

from ds2.batching import pad_batch
from ds2.inference import Decoder, LoadedModel
from ds2.shapes import time_stride

# The batch shape of the warm-up run that compiles the graph (utterances, seconds each). Any shape
# compiles the dynamic-shape graph; two utterances also exercise a batch.
WARM_UP_SHAPE = (2, 1.0)


class Utterance(NamedTuple):
    """What the batcher carries for one request."""
    features: np.ndarray    # float32 [n_bins, frames]
    decoder: str            # a decoder's name (ds2.decoders) that Recognizer.decoders holds


class Recognized(NamedTuple):
    text: str
    log_probs: np.ndarray   # [output frames, labels] of the utterance's real frames
    batch_size: int         # utterances in the batch it ran in


class Recognizer:
    def __init__(self, loaded: LoadedModel, decoders: Dict[str, Decoder]):
        """loaded: from load_for_inference with dynamic shapes (train.shapes=dynamic)."""
        self.model = loaded.model
        self.cfg = loaded.cfg
        self.decoders = decoders
        features = self.cfg.features
        self.feature_seconds = features.hop_length / features.sample_rate
        self.frame_seconds = self.feature_seconds * time_stride(self.cfg.model)   # one output frame

    def warm_up(self) -> None:
        """Compile the model's graph by running it once."""
        count, seconds = WARM_UP_SHAPE
        frames = int(seconds / self.feature_seconds)
        self._log_probs([np.zeros((self.cfg.features.n_bins, frames), np.float32)] * count)

    def _log_probs(self, features: List[np.ndarray]) -> List[np.ndarray]:
        import mindspore as ms

        width = max(f.shape[1] for f in features)
        padded = pad_batch(range(len(features)), width, features, [()] * len(features),
                           self.cfg.features.n_bins, 0, self.feature_seconds)
        log_probs, lengths = self.model(ms.Tensor(padded.features), ms.Tensor(padded.frames))
        log_probs, lengths = log_probs.asnumpy(), lengths.asnumpy()
        return [log_probs[:lengths[row], row] for row in range(len(features))]

    def run(self, utterances: List[Utterance]) -> List[Recognized]:
        """The batcher's run(): one batch through the model, then each utterance decoded."""
        outputs = self._log_probs([u.features for u in utterances])
        return [Recognized(self.decoders[u.decoder].decode(log_probs), log_probs, len(utterances))
                for u, log_probs in zip(utterances, outputs)]
