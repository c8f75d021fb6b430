"""Real imports: each module alone (run_import), and several in one process (run_together).

An import that works is followed by a small real use of the module, because several breakages only
show on first use (torch built for numpy 1.x under numpy 2, a libsndfile without FLAC, a numba that
cannot compile against the installed numpy).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
import time
import traceback

from envcheck import progress

# Modules ds2 can run without; missing, they are INFO, not FAIL.
OPTIONAL = {
    "torch": "only needed to convert deepspeech.pytorch checkpoints and for the PyTorch comparison benchmark",
    "flashlight.lib.text.decoder.kenlm": "flashlight-text: only needed for beam search with a language model "
                                         "(ds2 tune-lm, ds2 eval / transcribe with an LM); greedy decoding works",
}
# Optional modules that one feature needs: present but broken, they are a WARN (that feature will fail, the
# stage itself can run), not a FAIL.
FEATURE_ONLY = {
    "flashlight.lib.text.decoder.kenlm": "beam search with a language model will fail; greedy decoding "
                                         "(ds2 eval --no-lm) works",
}


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def import_failure(name: str, exc: BaseException, summary_prefix: str = "") -> dict:
    details = {"module": name, "error": f"{type(exc).__name__}: {exc}"}
    findings = ["import-error"]
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        details["missing_module"] = exc.name
        findings.append("dependency-missing")
    return {"status": "fail", "summary": summary_prefix + _first_line(exc), "details": details,
            "findings": findings, "output": traceback.format_exc()}


# --- what each module is asked to do once imported -------------------------------------------------

def _use_numpy(np) -> str:
    a = np.arange(12.0).reshape(3, 4)
    trace = float((a @ a.T).trace())  # the sum of squares of 0..11
    if trace != 506.0:
        raise AssertionError(f"3x4 matrix product gives trace {trace}, expected 506")
    return "matrix product ok"


def _use_scipy(scipy) -> str:
    import scipy.fft  # noqa: F401  (compiled modules the feature code uses)
    import scipy.signal
    window = scipy.signal.get_window("hann", 320)
    if abs(float(window.sum()) - 160.0) > 1e-6:
        raise AssertionError(f"periodic 320-point hann window sums to {window.sum()}, expected 160")
    return "signal.get_window('hann') ok"


def _use_soundfile(sf) -> str:
    import numpy as np
    t = np.arange(1600) / 16000.0
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype("float32")
    with tempfile.TemporaryDirectory(prefix="envcheck-flac-") as work:
        path = os.path.join(work, "tone.flac")
        sf.write(path, tone, 16000, format="FLAC", subtype="PCM_16")
        decoded, rate = sf.read(path, dtype="float32")
    if rate != 16000 or decoded.shape != tone.shape or float(abs(decoded - tone).max()) > 1e-3:
        raise AssertionError(f"FLAC round trip changed the audio (rate {rate}, shape {decoded.shape})")
    return f"FLAC write and decode ok (libsndfile {getattr(sf, '__libsndfile_version__', '?')})"


def _use_numba(numba) -> str:
    import llvmlite
    import numpy as np

    @numba.njit(cache=False)
    def total(values):
        s = 0.0
        for v in values:
            s += v
        return s

    if total(np.arange(4.0)) != 6.0:
        raise AssertionError("njit-compiled sum of [0, 1, 2, 3] is not 6")
    return f"njit compiles and runs (llvmlite {llvmlite.__version__}, numpy {np.__version__})"


def _use_librosa(librosa) -> str:
    import numpy as np
    signal = np.random.RandomState(0).randn(1600).astype("float32")
    spec = librosa.stft(signal, n_fft=320, hop_length=160, win_length=320, window="hann")
    if spec.shape != (161, 11):
        raise AssertionError(f"stft of 1600 samples has shape {spec.shape}, expected (161, 11)")
    return "stft ok"


def _use_torch(torch) -> str:
    import numpy as np
    if torch.from_numpy(np.arange(4.0)).sum().item() != 6.0:
        raise AssertionError("torch.from_numpy([0, 1, 2, 3]).sum() is not 6")
    return f"tensor from numpy ok (CUDA build: {torch.version.cuda or 'none'})"


def _use_levenshtein(Levenshtein) -> str:
    if Levenshtein.distance("kitten", "sitting") != 3:
        raise AssertionError("distance('kitten', 'sitting') is not 3")
    return "distance ok"


def _use_flashlight(kenlm) -> str:
    from importlib import metadata

    from flashlight.lib.text.dictionary import Dictionary

    arpa = ("\\data\\\nngram 1=4\nngram 2=0\n\n\\1-grams:\n-1.0\t<unk>\t0\n-99\t<s>\t0\n-0.3\tHELLO\t0\n"
            "-0.5\t</s>\t0\n\n\\2-grams:\n\n\\end\\\n")
    with tempfile.TemporaryDirectory(prefix="envcheck-kenlm-") as work:
        path = os.path.join(work, "unigram.arpa")
        with open(path, "w") as f:
            f.write(arpa)
        words = Dictionary(["HELLO"])
        model = kenlm.KenLM(path, words)
        _, score = model.score(model.start(False), words.get_index("HELLO"))
    if abs(score - -0.3) > 1e-4:
        raise AssertionError(f"KenLM scores HELLO at log10 p = {score}, the ARPA file says -0.3")
    return f"KenLM reads an ARPA model and scores a word (flashlight-text {metadata.version('flashlight-text')})"


def _use_mindspore(mindspore) -> str:
    import numpy as np
    if float(mindspore.Tensor(np.arange(4, dtype=np.float32)).asnumpy().sum()) != 6.0:
        raise AssertionError("Tensor([0, 1, 2, 3]).asnumpy().sum() is not 6")
    return "Tensor round trip ok"


USES = {
    "numpy": _use_numpy,
    "scipy": _use_scipy,
    "soundfile": _use_soundfile,
    "numba": _use_numba,
    "librosa": _use_librosa,
    "torch": _use_torch,
    "Levenshtein": _use_levenshtein,
    "mindspore": _use_mindspore,
    "flashlight.lib.text.decoder.kenlm": _use_flashlight,
}


def _feature_only(name: str, failure: dict) -> dict:
    """A failure of a module only one feature needs, as a WARN that says which feature."""
    if name in FEATURE_ONLY:
        failure["status"] = "warn"
        failure["summary"] += f" ({FEATURE_ONLY[name]})"
    return failure


def run_import(settings: dict, name: str) -> dict:
    if not _installed(name):
        if name in OPTIONAL:
            return {"status": "info", "summary": f"{name} is not installed ({OPTIONAL[name]})",
                    "details": {"module": name}}
        return {"status": "fail", "summary": f"{name} is not installed", "details": {"module": name,
                "missing_module": name}, "findings": ["module-missing"]}
    progress.mark("import " + name)
    start = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except BaseException as exc:
        return _feature_only(name, import_failure(name, exc))
    import_s = time.perf_counter() - start
    version = str(getattr(module, "__version__", "") or "")
    details = {"module": name, "version": version, "import_s": round(import_s, 3),
               "file": getattr(module, "__file__", None)}
    progress.mark("use " + name)
    try:
        used = USES[name](module)
    except BaseException as exc:
        failure = import_failure(name, exc, summary_prefix=f"{name} {version}".rstrip() + " imports, but using it fails: ")
        failure["details"].update(details)
        failure["findings"] = ["use-error"]
        return _feature_only(name, failure)
    return {"status": "pass", "summary": f"{name} {version}".rstrip() + f": imports in {import_s:.1f} s; {used}",
            "details": details}


def run_together(settings: dict, modules: list, reverse: bool, excluded: dict = None) -> dict:
    order = list(reversed(modules)) if reverse else list(modules)
    imported, not_installed = [], []
    details = {"order": order, "imported": imported, "not_installed": not_installed, "excluded": excluded or {}}
    for name in order:
        if not _installed(name):
            not_installed.append(name)
            continue
        progress.mark("import " + name)
        try:
            importlib.import_module(name)
        except BaseException as exc:
            after = ", ".join(imported) or "nothing else"
            failure = import_failure(name, exc, summary_prefix=f"{name} fails to import after {after}: ")
            failure["details"].update(details, failed_module=name)
            failure["findings"] = ["import-error", "import-interaction"]
            return failure
        imported.append(name)
    left_out = "".join(f"; left out {name} ({why})" for name, why in (excluded or {}).items())
    if len(imported) < 2:
        return {"status": "skip", "summary": "fewer than two modules to import together" + left_out,
                "details": details}
    return {"status": "pass", "summary": "imported together: " + " -> ".join(imported) + left_out,
            "details": details}
