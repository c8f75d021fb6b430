"""Checkpoints: ds2's own on disk, and those of other versions and code bases brought into a ds2 model.

storage.py          ds2's checkpoint files: atomic save with a SHA-256 sidecar, load, the one restore
                    (exact names and shapes: ds2 train --resume, eval, transcribe), step files, best /
                    last, pruning, and reading any MindSpore .ckpt
layouts.py          other code bases' parameter names as data (MindSpore model zoo, deepspeech.pytorch),
                    the roles they map to, and where each role lives in the live model
transforms.py       array transforms between layouts (size-1 reshapes, flat LSTM weights, label orders)
reconcile.py        what of a checkpoint goes where in a model and optimizer, decided before anything
                    is set; apply() sets it (ds2 convert, envcheck --checkpoint)
report.py           the reconciliation's report: a table of every entry that did not load unchanged
torch_unpickler.py  torch checkpoints read without running them (a restricted unpickler)
"""
