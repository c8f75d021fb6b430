"""Helpers shared by several test files: a tiny tone corpus with its run overrides, a training-state
checkpoint as MindSpore's ModelCheckpoint writes one, a pickle that runs a command when it is loaded, and
model outputs that spell what a decoder test needs."""
import json
from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16000
# Tiny "speech": every letter is a tone of its own pitch, so a tiny model can learn the mapping.
TONE_LETTERS = "ABCDE"
STEP = 7   # Adam steps a saved training state has taken: beta powers 0.9**7, 0.999**7


def write_tone_corpus(root: Path, counts=(("train", 24), ("dev", 6), ("test", 6)), seed=0):
    """Manifests of short tone sequences; returns {split: manifest path}."""
    rng = np.random.default_rng(seed)
    manifests = {}
    for split, count in counts:
        samples = []
        for i in range(count):
            text = "".join(rng.choice(list(TONE_LETTERS), size=rng.integers(2, 5)))
            pieces = []
            for letter in text:
                t = np.arange(int(0.08 * SAMPLE_RATE)) / SAMPLE_RATE
                pieces.append(0.5 * np.sin(2 * np.pi * (400 + 300 * TONE_LETTERS.index(letter)) * t))
                pieces.append(np.zeros(int(0.03 * SAMPLE_RATE)))
            audio = np.concatenate([np.zeros(int(0.05 * SAMPLE_RATE))] + pieces).astype(np.float32)
            path = root / split / f"{split}-{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), audio, SAMPLE_RATE)
            samples.append({"wav_path": str(path), "transcript_path": "", "transcript": text,
                            "duration": len(audio) / SAMPLE_RATE, "speaker": "tone", "id": f"{split}-{i}"})
        manifests[split] = root / f"{split}.json"
        manifests[split].write_text(json.dumps({"root_path": str(root), "samples": samples}))
    return manifests


def tiny_overrides(run_dir: Path, data_dir: Path, manifests, **extra):
    values = {
        "run_dir": run_dir, "data.data_dir": data_dir,
        "data.train_manifest": manifests["train"], "data.dev_manifest": manifests["dev"],
        "data.test_manifest": manifests["test"],
        "model.conv_channels": 4, "model.conv1_kernel": "[5,5]", "model.conv2_kernel": "[5,5]",
        "model.conv2_stride": "[2,1]", "model.rnn_hidden": 16, "model.rnn_layers": 1,
        "train.epochs": 3, "train.max_batch_size": 8, "train.max_batch_seconds": 6.0, "train.num_buckets": 1,
        "train.lr": 3e-3, "train.warmup_steps": 3, "train.checkpoint_every": 2, "train.threads": 2,
    }
    values.update(extra)
    args = []
    for key, value in values.items():
        args += ["--set", f"{key}={value}"]
    return args


def read_metrics(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def save_training_state(path, model, optimizer, power_shape, with_global_step):
    """A training-state checkpoint as MindSpore's ModelCheckpoint writes one (names are Parameter.name),
    with Adam's beta powers in shape `power_shape`: (1,) as older optimizers stored them, () as nn.Adam
    does now. Returns the stored values by name."""
    import mindspore as ms

    rng = np.random.default_rng(0)
    stored = {param.name: rng.standard_normal(param.shape).astype(np.float32) for param in model.get_parameters()}
    stored.update({name: rng.random(param.shape).astype(np.float32)
                   for name, param in optimizer.parameters_and_names() if name.startswith(("moment1.", "moment2."))})
    stored["beta1_power"] = np.full(power_shape, 0.9 ** STEP, np.float32)
    stored["beta2_power"] = np.full(power_shape, 0.999 ** STEP, np.float32)
    stored["learning_rate"] = np.array(3e-4, np.float32)
    if with_global_step:
        stored["global_step"] = np.array([STEP], np.int32)
    ms.save_checkpoint([{"name": name, "data": ms.Parameter(ms.Tensor(value), name=name)}
                        for name, value in stored.items()], str(path))
    return stored


def save_untrained_checkpoint(overrides, step=4):
    """A checkpoint of a freshly initialised model of the run the overrides describe (no training needed
    to compare two ways of running the same weights)."""
    import mindspore as ms

    from ds2.checkpoint import storage
    from ds2.config import load_config, to_dict
    from ds2.model import DeepSpeech2

    cfg = load_config("small", overrides=[o for o in overrides if o != "--set"])
    ms.set_seed(3)
    model = DeepSpeech2(cfg.model, cfg.features.n_bins)
    path = storage.step_path(cfg.run_dir, step)
    storage.save(path, model, None, {"config": to_dict(cfg), "step": step})
    return path


class RunsACommand:
    """Unpickling this calls os.system: what a malicious torch checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def label_frames(labels: str, *spec) -> np.ndarray:
    """Log-probabilities [frames, labels] of a frame sequence over `labels` (the blank "_" among them). Each
    item is a label (near-certain) or a dict {label: probability} for an uncertain frame; a blank frame
    follows every item."""
    rows = []
    for item in spec:
        wanted = item if isinstance(item, dict) else {item: 0.98}
        for probabilities in (wanted, {"_": 0.98}):
            row = np.full(len(labels), 1e-4)
            for label, probability in probabilities.items():
                row[labels.index(label)] = probability
            rows.append(row / row.sum())
    return np.log(np.array(rows, dtype=np.float32))
