"""ds2.checkpoint.torch_unpickler: torch checkpoints are read without running them. A file that would import
anything beyond tensors, plain values and the allow-listed configuration classes is refused by name,
before any of it runs; deepspeech.pytorch V3 files are read without importing their code bases."""
import re
import sys

import pytest

torch = pytest.importorskip("torch")

from ds2.checkpoint.torch_unpickler import TorchCheckpointError, UnsafeCheckpoint, read_torch_checkpoint  # noqa: E402
from ds2.config import DEFAULT_LABELS  # noqa: E402
from tests.helpers import RunsACommand  # noqa: E402


def test_a_torch_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "command-ran"
    path = tmp_path / "malicious.pth"
    torch.save({"state_dict": {"fc.0.module.1.weight": torch.zeros(2, 2)}, "hook": RunsACommand(marker)}, str(path))

    with pytest.raises(UnsafeCheckpoint, match=r"would import (posix|os)\.system"):
        read_torch_checkpoint(path)
    assert not marker.exists()


def test_a_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pth"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))

    with pytest.raises(UnsafeCheckpoint, match="TorchScript"):
        read_torch_checkpoint(path)


class CallsGetitem:
    """Unpickling this calls operator.getitem on a dict: allowed only on typing's stand-ins."""

    def __reduce__(self):
        import operator
        return operator.getitem, ({"key": "value"}, "key")


def test_operator_getitem_is_refused_outside_typing(tmp_path):
    path = tmp_path / "getitem.pth"
    torch.save({"state_dict": {"fc.0.module.1.weight": torch.zeros(2, 2)}, "trick": CallsGetitem()}, str(path))

    with pytest.raises(UnsafeCheckpoint, match="operator.getitem applied to"):
        read_torch_checkpoint(path)


# deepspeech.pytorch V3: a PyTorch Lightning checkpoint as released (tests/deepspeech_pytorch_v3.py makes
# it as that code base saves one: omegaconf configs in hyper_parameters, Lightning's keys, torch.save).
# The network is any torch module: the reader does not look at the architecture.


class OneLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnns = torch.nn.ModuleList([torch.nn.Module()])
        self.rnns[0].rnn = torch.nn.LSTM(3, 2, bidirectional=True)


def test_v3_checkpoint_is_read_without_importing_its_code_bases(tmp_path):
    from tests import deepspeech_pytorch_v3 as v3

    path = tmp_path / "librispeech_pretrained_v3.ckpt"
    v3.save(v3.lightning_checkpoint(OneLayer(), DEFAULT_LABELS, v3.training_config(hidden_size=8, hidden_layers=3)),
            path)

    values, others = read_torch_checkpoint(path)

    assert not [name for name in sys.modules
                if name.split(".")[0] in ("omegaconf", "hydra", "hydra_configs", "pytorch_lightning",
                                          "deepspeech_pytorch")]
    assert others["hyper_parameters"]["spect_cfg"] == {"sample_rate": 16000, "window_size": 0.02,
                                                       "window_stride": 0.01, "window": "hamming"}
    assert others["hyper_parameters"]["model_cfg"] == {"rnn_type": "torch.nn.modules.rnn.LSTM",
                                                       "hidden_size": 8, "hidden_layers": 3}
    assert others["hyper_parameters"]["optim_cfg"]["betas"] == [0.9, 0.999]
    assert others["hyper_parameters"]["labels"] == list(DEFAULT_LABELS)
    assert others["hyper_parameters"]["precision"] == 16
    assert others["callbacks"]["deepspeech_pytorch.checkpoint.CheckpointHandler"]["monitor"] == "wer"
    assert others["pytorch-lightning_version"] == "1.1.8" and others["hparams_name"] == "kwargs"
    assert {"epoch", "global_step", "optimizer_states", "lr_schedulers", "native_amp_scaling_state"} <= set(others)
    assert "rnns.0.rnn.weight_ih_l0" in values


def test_v3_checkpoint_with_an_unknown_class_is_refused_by_name(tmp_path):
    from tests import deepspeech_pytorch_v3 as v3

    marker = tmp_path / "command-ran"
    path = tmp_path / "with_extra.ckpt"
    v3.save(v3.lightning_checkpoint(OneLayer(), DEFAULT_LABELS, v3.training_config(),
                                    extra={"loops": RunsACommand(marker)}), path)

    with pytest.raises(UnsafeCheckpoint) as raised:
        read_torch_checkpoint(path)
    assert re.search(r"would import (posix|os)\.system", str(raised.value))
    assert not marker.exists()


def test_a_pickle_naming_a_huge_memo_index_costs_no_memory(tmp_path):
    """PROTO 2, NONE, LONG_BINPUT 2^26: the C unpickler grows and clears a memo of 2^27 slots (1 GiB) for it,
    and 64 GiB for an index of 2^32 - 1."""
    import resource

    path = tmp_path / "memo.pth"
    path.write_bytes(b"\x80\x02N" + b"r" + (2 ** 26).to_bytes(4, "little") + b".")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TorchCheckpointError):
        read_torch_checkpoint(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024
