"""Runs in the CPU image for test_distributed: step-1 losses of a fresh model on given utterances.

    python union_batch_loss.py CONFIG.yaml '[[ids of rank 0], [ids of rank 1], ...]'

Prints JSON {"union": loss of all ids in one batch, "parts": [loss of each list]}. The model is
built the way `ds2 train` builds it (same config, same seed), so its parameters are the ones the
job started from. Every batch is padded to the widest bucket (the test uses one bucket).
"""
import json
import sys

import mindspore as ms
import yaml

from ds2.batching import Batch
from ds2.config import from_dict
from ds2.model import DeepSpeech2, TrainNetwork
from ds2.data.sets import load_sets
from ds2.runtime import configure_mindspore

cfg = from_dict(yaml.safe_load(open(sys.argv[1])))
parts = json.loads(sys.argv[2])
configure_mindspore(cfg)
train_set = load_sets(cfg, ["train"], drop_unalignable=True)["train"]
sampler = train_set.sampler(cfg.train.seed, shuffle=True)
load = train_set.loader(sampler)
position = {utterance.id: i for i, utterance in enumerate(train_set.utterances)}
model = DeepSpeech2(cfg.model, cfg.features.n_bins)
model.set_train(True)
network = TrainNetwork(model)


def loss(ids):
    padded = load(Batch(tuple(position[i] for i in ids), sampler.widths[-1]))
    value = network(ms.Tensor(padded.features), ms.Tensor(padded.frames), ms.Tensor(padded.labels),
                    ms.Tensor(padded.label_lengths))
    return float(value.asnumpy())


print(json.dumps({"union": loss([i for part in parts for i in part]), "parts": [loss(part) for part in parts]}))
