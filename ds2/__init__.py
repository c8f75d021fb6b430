"""DeepSpeech2 on MindSpore: preprocess, train, eval, transcribe.

Stages talk through files under a run directory (see README): manifests, feature cache,
checkpoints, metrics. Importing this package does not import MindSpore; the modules that need it
(model, train, evaluate) import it themselves.
"""

__version__ = "0.1.0"
