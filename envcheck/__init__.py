"""envcheck: is this environment ready for a DeepSpeech2-on-MindSpore job? If not, why, and what fixes it.

    python -m envcheck [--stage preprocess|train|eval] [--json [FILE]] [--python PATH] [--timeout S]
                       [--host] [--config YAML] [--preset small|seed] [--set KEY=VALUE]
                       [--checkpoint PATH] [--only PATTERN]

Run it before a long job; the Makefile runs `python -m envcheck --stage STAGE` before every stage.
`pip install` of the project makes the same command `envcheck`. It needs only the Python standard
library (it uses `packaging` when present), so it can diagnose environments where numpy, MindSpore or
torch are missing or broken. Its checks see the import path `python -m ds2` would have in the working
directory (envcheck/child.py); its own process does not search the working directory (__main__.py).

How it works
    Every probe (envcheck/probes/) runs in its own subprocess of the interpreter under test
    (--python, default: the one running envcheck) with `-X faulthandler` and a timeout. A probe that
    segfaults, aborts, hangs or is OOM-killed becomes a FAIL with the signal, the Python traceback
    faulthandler printed and the module that was being imported; it never takes envcheck down.
    Probes run in parallel. Their results are matched against a knowledge base of rules
    (envcheck/rules/*.json, see diagnose.py) that explain the cause and give the fix.

--checkpoint PATH adds the probe checkpoint.load (stages train and eval, or no --stage): it builds the
model (and the optimizer) as the stage would and reconciles the file with it (ds2.checkpoint.reconcile): FAIL when
the file is missing, truncated, unreadable or its weights do not fit; WARN when entries had to be
reshaped, the optimizer state would restart, or ds2 train --resume / ds2 eval would not take the file
as it is (ds2 convert would); its details hold the reconciliation table ("table").

Statuses
    PASS  checked and fine
    INFO  a fact that needs no action here (e.g. no GPU while the device is CPU)
    SKIP  the check does not apply (e.g. no MindSpore installed to look for GPU plugins in)
    WARN  works, but likely to cause trouble (slow, fragile, or outside tested versions)
    FAIL  will break the stage

Exit codes
    0  ready: nothing above PASS/INFO/SKIP
    1  at least one FAIL: a blocking problem
    2  warnings only (WARN, no FAIL)
    3  envcheck itself failed: it crashed, its rules are malformed, or it was called with bad arguments
    130  interrupted (Ctrl-C); the probes that were running are killed

JSON (--json), schema_version 1
    {
      "schema_version": 1,
      "envcheck_version": "0.1.0",
      "stage": "train" | "preprocess" | "eval" | null (all probes),
      "python": "/path/to/interpreter/under/test",
      "host": false,                        # --host given
      "duration_s": 9.8,
      "probes": [
        {
          "id": "import.mindspore",         # stable probe id; "config" is envcheck reading ds2's config
          "title": "import mindspore alone",
          "status": "pass" | "info" | "skip" | "warn" | "fail",
          "summary": "one line",
          "details": {...},                 # probe-specific facts; crashed or hung probes have outcome,
                                            # signal, traceback, last_event, last_import, steps
          "findings": ["crash-during-import", ...],   # codes the rules match
          "duration_s": 3.1,
          "diagnosis": [{"rule_id": "...", "title": "...", "explanation": "...", "fix": ["command", ...]}]
        }
      ],
      "exit_code": 1
    }
    Keys are only ever added within a schema_version; a removal or change of meaning bumps it.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
