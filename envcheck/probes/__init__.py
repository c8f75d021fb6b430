"""The probes: what envcheck checks, for which stage, with what time limit.

Each probe is a function `run(settings, **arguments) -> dict` in a module of this package, called in
its own subprocess by envcheck/child.py. Probe modules import only the standard library at module
level; whatever they test (numpy, mindspore, ...) is imported inside the function.

Stages (`--stage`) select the probes that stage's process depends on; a run without --stage runs
every probe except the Docker host probe, which needs --host. The checkpoint probe checks a file
rather than the environment: it runs only when `--checkpoint PATH` is given (stages train and eval,
or no --stage), and is not in PROBES.

Adding a probe: write envcheck/probes/<name>.py with run(), add a Probe below, and add rules for its
failures to envcheck/rules/*.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

PREPROCESS, TRAIN, EVAL = "preprocess", "train", "eval"
STAGES = (PREPROCESS, TRAIN, EVAL)


@dataclass(frozen=True, eq=False)
class Probe:
    id: str
    title: str
    module: str                             # envcheck.probes.<module>
    function: str = "run"
    arguments: Dict[str, object] = field(default_factory=dict)
    stages: Tuple[str, ...] = STAGES        # the full run (no --stage) runs every non-host probe
    timeout_s: float = 60.0
    cost_s: float = 0.3                     # rough CPU seconds on a 2-core machine: costly probes start first
    host: bool = False                      # only with --host
    after: Tuple[str, ...] = ()             # probes whose results this one needs before it starts


# Modules imported alone, in the order the "together" probes import them. The key is the probe id suffix.
IMPORTS: List[Tuple[str, str, Tuple[str, ...], float]] = [
    # key,          module,        stages,                     cost_s
    ("numpy", "numpy", STAGES, 0.3),
    ("scipy", "scipy", STAGES, 0.5),
    ("soundfile", "soundfile", STAGES, 0.5),
    ("numba", "numba", STAGES, 1.0),
    ("librosa", "librosa", STAGES, 1.8),
    ("levenshtein", "Levenshtein", (EVAL,), 0.2),
    ("torch", "torch", (), 1.0),
    ("mindspore", "mindspore", (TRAIN, EVAL), 3.0),
    ("flashlight", "flashlight.lib.text.decoder.kenlm", (EVAL,), 0.3),   # flashlight-text's KenLM decoder
]
IMPORT_IDS = tuple("import." + key for key, _, _, _ in IMPORTS)
TOGETHER_IDS = ("import.together", "import.together-reversed")


def _import_probes() -> List[Probe]:
    probes = [
        Probe(id="import." + key, title=f"import {module} alone", module="imports", function="run_import",
              arguments={"name": module}, stages=stages, cost_s=cost,
              timeout_s=300.0 if module == "mindspore" else 180.0)
        for key, module, stages, cost in IMPORTS
    ]
    probes += [
        Probe(id=TOGETHER_IDS[0], title="import every module of the stage in one process",
              module="imports", function="run_together", arguments={"reverse": False},
              cost_s=5.0, timeout_s=300.0, after=IMPORT_IDS),
        Probe(id=TOGETHER_IDS[1], title="the same, in the reverse order",
              module="imports", function="run_together", arguments={"reverse": True},
              cost_s=5.0, timeout_s=300.0, after=IMPORT_IDS),
    ]
    return probes


PROBES: List[Probe] = [
    Probe(id="python", title="Python interpreter and platform tags", module="python_platform", cost_s=0.1),
    Probe(id="distributions", title="installed distributions satisfy each other's requirements",
          module="distributions", cost_s=0.4),
    Probe(id="import.path", title="the modules imported by ds2 come from this environment, not a file that shadows them",
          module="import_path", cost_s=0.4),
    *_import_probes(),
    Probe(id="torch.exit", title="a torch backward pass, then a clean exit",
          module="torch_exit", stages=(), cost_s=6.0, timeout_s=600.0),
    Probe(id="numpy.abi", title="numpy C-API versus the compiled modules that use it", module="numpy_abi",
          cost_s=1.2, timeout_s=120.0),
    Probe(id="stft.window", title="the configured STFT window exists in SciPy", module="stft_window",
          cost_s=0.5, timeout_s=120.0),
    Probe(id="espeak", title="espeak-ng for the synthetic corpus", module="espeak", stages=(PREPROCESS,),
          cost_s=0.2),
    Probe(id="mindspore.train_step", title="MindSpore CPU training step (GRAPH_MODE, conv + LSTM + CTC)",
          module="mindspore_train", stages=(TRAIN,), cost_s=5.0, timeout_s=300.0),
    Probe(id="mindspore.run_check", title="mindspore.run_check() on the configured device, judged by its output",
          module="mindspore_run_check", stages=(TRAIN, EVAL), cost_s=3.0, timeout_s=300.0),
    Probe(id="gpu.devices", title="NVIDIA driver and GPUs", module="gpu_devices", stages=(TRAIN, EVAL),
          cost_s=0.2),
    Probe(id="gpu.libs", title="shared libraries of MindSpore's GPU plugins resolve", module="gpu_libs",
          stages=(TRAIN, EVAL), cost_s=0.4),
    Probe(id="memory", title="memory limit versus what the model needs", module="memory", stages=(TRAIN, EVAL),
          cost_s=0.1),
    Probe(id="disk", title="free disk in the data and run directories", module="disk", cost_s=0.1),
    Probe(id="cpu.features", title="CPU instruction sets", module="cpu_features", cost_s=0.1),
    Probe(id="kernels", title="the kernels training runs on (train.lstm_kernel, conv_kernel, ctc_kernel)",
          module="kernels", stages=(TRAIN,), cost_s=0.2),
    Probe(id="threads", title="thread settings versus the cores this process may use", module="threads",
          cost_s=0.1),
    Probe(id="preload", title="the libraries LD_PRELOAD names are loaded", module="preload", cost_s=0.1),
    Probe(id="docker", title="Docker engine, Compose v2 and NVIDIA runtime (host)", module="docker_host",
          host=True, cost_s=0.5, timeout_s=60.0),
]
BY_ID: Dict[str, Probe] = {p.id: p for p in PROBES}

# Building a model of the configured size and reading the file can take a while for the seed preset.
CHECKPOINT_PROBE = Probe(id="checkpoint.load", title="the --checkpoint file loads into the model the stage builds",
                         module="checkpoint_load", stages=(TRAIN, EVAL), cost_s=4.0, timeout_s=300.0)


def select(stage: Optional[str], host: bool, checkpoint: bool = False) -> List[Probe]:
    """Probes for a stage (None: all of them); host probes only with host=True; the checkpoint probe
    only with checkpoint=True (a --checkpoint was given)."""
    chosen = []
    for probe in PROBES:
        if probe.host:
            if host:
                chosen.append(probe)
        elif stage is None or stage in probe.stages:
            chosen.append(probe)
    if checkpoint and (stage is None or stage in CHECKPOINT_PROBE.stages):
        chosen.append(CHECKPOINT_PROBE)
    return chosen
