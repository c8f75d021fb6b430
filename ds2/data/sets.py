"""Where the stages find their data, and the splits loaded for training and evaluation.

`ds2 preprocess` writes the checked manifests to manifest_path(cfg, split) and may fill the feature
cache under feature_cache_dir(cfg); train and eval read both with load_sets.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

from ds2.config import Config
from ds2.errors import DataError, UserError

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


def data_settings(cfg: Config, split: str) -> Dict[str, Any]:
    """The settings that decide which utterances `ds2 preprocess` puts in split's manifest, as JSON values:
    the manifest records them, and train and eval compare them with the settings in effect."""
    data = cfg.data
    settings: Dict[str, Any] = {"source": data.source}
    if data.source == "synth":
        settings.update(utterances=getattr(data, f"synth_{split}"), synth_seed=data.synth_seed,
                        sample_rate=cfg.features.sample_rate)
    elif data.source == "librispeech":
        settings.update(subsets=list(getattr(data, f"{split}_subsets")))
    else:
        settings.update(manifest=getattr(data, f"{split}_manifest"))
    # The labels as a set of characters: which transcripts they can spell, whatever their order (a converted
    # checkpoint may order them otherwise than the preset that prepared the data).
    settings.update(max_duration=data.max_duration, labels="".join(sorted(set(cfg.model.labels))))
    return json.loads(json.dumps(settings))


def check_provenance(cfg: Config, split: str, path: Path) -> None:
    """DataError when the manifest at path was written under other data settings than cfg's; a warning when
    it does not say (written before manifests recorded them, or by another tool): it is used as it is."""
    from ds2.data.manifest import DATA_SETTINGS_KEY, read_data_settings

    stored = read_data_settings(path)
    if stored is None:
        print(f"ds2: {path} does not record the data settings that wrote it ({DATA_SETTINGS_KEY}); it is used "
              f"as it is (run `ds2 preprocess` again to record them)", file=sys.stderr)
        return
    current = data_settings(cfg, split)
    differences = [f"{name} {stored.get(name)!r} there, {current.get(name)!r} now"
                   for name in sorted(set(stored) | set(current)) if stored.get(name) != current.get(name)]
    if differences:
        raise DataError(path, f"written under other data settings ({'; '.join(differences)})",
                        "run `ds2 preprocess` (make preprocess) again with the same --preset/--config/--set "
                        "as this command")


def read_split(cfg: Config, split: str) -> List["Utterance"]:
    """The usable utterances of split's manifest (its problems printed to stderr), which must have been
    written under the data settings in effect (check_provenance)."""
    from ds2.data.manifest import read_manifest

    path = manifest_path(cfg, split)
    if not path.is_file():
        raise UserError(f"no {split} manifest at {path}: run `ds2 preprocess` (make preprocess) first, with "
                        f"the same --preset/--config/--set")
    check_provenance(cfg, split, path)
    utterances, problems = read_manifest(path, cfg.model.labels)
    if problems.total:
        print(f"{split} manifest {path}: {problems}", file=sys.stderr)
    if not utterances:
        raise DataError(path, f"the {split} manifest has no usable utterances ({problems.total} skipped)",
                        "run `ds2 preprocess` again and read its table of skipped utterances")
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
