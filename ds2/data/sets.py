"""Where the stages find their data, and the splits loaded for training and evaluation.

`ds2 preprocess` writes the checked manifests to manifest_path(cfg, split) and may fill the feature
cache under feature_cache_dir(cfg); train and eval read both with load_sets.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

from ds2.config import Config
from ds2.errors import UserError

if TYPE_CHECKING:
    from ds2.batching import UtteranceSet
    from ds2.data.manifest import Utterance

SPLITS = ("train", "dev", "test")


def manifest_path(cfg: Config, split: str) -> Path:
    """The checked manifest of split that train and eval read (written by `ds2 preprocess`).

    data.<split>_manifest names it for the synth and librispeech sources when set; with
    source=manifest those settings name the inputs, and the checked copies live in data_dir.
    """
    given = getattr(cfg.data, f"{split}_manifest")
    if given and cfg.data.source != "manifest":
        return Path(given)
    return Path(cfg.data.data_dir) / "manifests" / f"{split}.json"


def feature_cache_dir(cfg: Config) -> Path:
    return Path(cfg.data.data_dir) / "features"


def sweep_feature_cache(cfg: Config) -> None:
    """Remove what killed writers left in the feature cache (<cache>/<settings hash>/<2 hex digits>/)."""
    from ds2 import files

    files.sweep_tree(feature_cache_dir(cfg), depth=2)


def read_split(cfg: Config, split: str) -> List["Utterance"]:
    """The usable utterances of split's manifest (its problems printed to stderr)."""
    from ds2.data.manifest import read_manifest

    path = manifest_path(cfg, split)
    if not path.is_file():
        raise UserError(f"no {split} manifest at {path}: run `ds2 preprocess` (make preprocess) first, with "
                        f"the same --preset/--config/--set")
    utterances, problems = read_manifest(path, cfg.model.labels)
    if problems.total:
        print(f"{split} manifest {path}: {problems}", file=sys.stderr)
    if not utterances:
        raise UserError(f"the {split} manifest {path} has no usable utterances; run `ds2 preprocess` again "
                        f"and read its table of skipped utterances")
    return utterances


def load_sets(cfg: Config, splits: Sequence[str], drop_unalignable: bool = False,
              limit: int = 0) -> Dict[str, "UtteranceSet"]:
    """{split: UtteranceSet} from the manifests `ds2 preprocess` wrote (or the configured ones); with
    limit, only the first `limit` utterances of each manifest."""
    from ds2.batching import UtteranceSet
    from ds2.features import FeatureCache

    cache = FeatureCache(feature_cache_dir(cfg), cfg.features)
    sets = {}
    for split in splits:
        utterances = read_split(cfg, split)
        sets[split] = UtteranceSet(utterances[:limit] if limit else utterances, cfg, cache, drop_unalignable)
        if sets[split].skipped_unalignable:
            print(f"{split}: {sets[split].skipped_unalignable} utterances skipped: more labels than "
                  f"output frames (CTC cannot align them)", file=sys.stderr)
    return sets
