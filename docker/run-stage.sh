#!/bin/sh
# Run one pipeline stage in the container: envcheck for what the stage needs, then the stage's commands.
# The Makefile and compose.yaml both call this, so each stage's command line is written here only.
#
#   ds2-stage STAGE [OPTION...]     e.g.  ds2-stage train        ds2-stage eval --no-lm
#
# OPTIONs go to the stage's last command. The run's configuration comes from the environment, the same
# for every stage and for envcheck, so envcheck checks the model the stage will run:
#   DS2_PRESET   the config preset (ds2's default when unset)
#   DS2_CONFIG   a YAML file, as seen inside the container, over the preset (optional)
#   DS2_ARGS     more config options, split at spaces: "--set train.epochs=2 --set data.synth_train=500"
# envcheck exit codes: 0 ready, 2 warnings only (go on), 1 blocking problem, 3 envcheck crashed.
set -u
set -f   # DS2_ARGS is split at spaces, never expanded as a file pattern (--set x=* stays as typed)

stages="preprocess data train eval lm tune-lm eval-lm export eval-pretrained train-gpu dist-scheduler envcheck serve bench bench-serve"

# configured "PROGRAM WORDS" OPTION...: the program (its words split at spaces; "exec ds2 serve" replaces
# this shell), the run's configuration, then OPTIONs, which win over the configuration's --set.
configured() {
    program=$1
    shift
    $program ${DS2_PRESET:+--preset "$DS2_PRESET"} ${DS2_CONFIG:+--config "$DS2_CONFIG"} ${DS2_ARGS:-} "$@"
}

# check PART: envcheck --stage PART (preprocess, train or eval) with the run's configuration; stop here
# unless the environment is ready or has warnings only.
check() {
    configured "python -m envcheck" --stage "$1"
    status=$?
    if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
        echo "ds2-stage: envcheck found a blocking problem for '$stage' (exit $status); see the diagnosis above. Not starting the stage." >&2
        exit "$status"
    fi
}

# eval-pretrained CHECKPOINT [--lm ARPA] [--tune] [--alpha A] [--beta B]: a checkpoint trained elsewhere,
# converted into runs/pretrained/<its name without extension> (once), evaluated on the test set greedy
# and with an LM: ARPA, else the one `ds2 lm` builds or downloads. --tune also prepares dev and tunes
# alpha / beta on it; otherwise --alpha / --beta, else ds2's defaults.
eval_pretrained() {
    [ $# -ge 1 ] || { echo "ds2-stage eval-pretrained: give the checkpoint: ds2-stage eval-pretrained FILE" >&2; exit 2; }
    source=$1
    shift
    lm=built tune= weights=
    while [ $# -gt 0 ]; do
        case $1 in
            --lm) lm=$2; shift 2 ;;
            --tune) tune=1; shift ;;
            --alpha|--beta) weights="$weights $1 $2"; shift 2 ;;
            *) echo "ds2-stage eval-pretrained: unknown option $1 (--lm ARPA, --tune, --alpha A, --beta B)" >&2; exit 2 ;;
        esac
    done
    file_name=${source##*/}
    run_dir=runs/pretrained/${file_name%.*}
    checkpoint=$run_dir/checkpoints/step-0000000.ckpt
    set -e
    [ -f "$checkpoint" ] || configured "ds2 convert" --set "run_dir=$run_dir" "$source"
    configured "ds2 preprocess" --set "run_dir=$run_dir" --splits ${tune:+dev,}test
    [ "$lm" != built ] || configured "ds2 lm" --set "run_dir=$run_dir"
    [ -z "$tune" ] || configured "ds2 tune-lm" --set "run_dir=$run_dir" --checkpoint "$checkpoint" --lm "$lm"
    configured "ds2 eval" --set "run_dir=$run_dir" --checkpoint "$checkpoint" --split test --no-lm
    configured "ds2 eval" --set "run_dir=$run_dir" --checkpoint "$checkpoint" --split test --lm "$lm" $weights
}

# Each stage's command line; OPTIONs given after the stage's name come last, so they win.
run() {
    name=$1
    shift
    case $name in
        preprocess)  configured "ds2 preprocess" --warm-cache "$@" ;;
        data)        configured "ds2 preprocess" "$@" ;;
        train)       configured "ds2 train" --resume "$@" ;;
        eval)        configured "ds2 eval" --checkpoint best --split test,test-noisy "$@" ;;
        lm)          configured "ds2 lm" "$@" ;;
        tune-lm)     configured "ds2 tune-lm" --checkpoint best "$@" ;;
        # The LM, its weights tuned on dev, then test and test-noisy greedy and with the tuned LM.
        eval-lm)     run lm && run tune-lm && run eval --no-lm && run eval "$@" ;;
        export)      configured "ds2 export" --checkpoint best "$@" ;;
        eval-pretrained) eval_pretrained "$@" ;;
        # Training speed, ds2 against PyTorch (docs/performance.md); it picks its own presets.
        bench)       python /opt/ds2/bench/train_speed.py --json /work/runs/bench/train_speed.json "$@" ;;
        bench-serve) configured "python /opt/ds2/bench/serve_bench.py" --json /work/runs/bench/serve_bench.json "$@" ;;
        # Data-parallel training's scheduler (docs/distributed.md) computes nothing; the workers run train.
        dist-scheduler) configured "exec ds2 train" --resume "$@" ;;
        envcheck)    configured "exec python -m envcheck" "$@" ;;
        # exec: the server is the init's child, so it gets the stop signal itself and drains.
        serve)       configured "exec ds2 serve" --checkpoint best --host 0.0.0.0 --port 8000 "$@" ;;
    esac
}

[ $# -ge 1 ] || { echo "usage: ds2-stage STAGE [OPTION...]; the stages: $stages" >&2; exit 2; }
stage=$1
shift
# The envcheck stage (the part of the environment) each stage needs. No envcheck before: envcheck itself;
# the distributed scheduler, which computes nothing; the server, which writes nothing and may run with the
# runs folder read-only, which envcheck's eval check refuses (if the model cannot run, the server says so
# and names envcheck).
case $stage in
    preprocess|data|lm)                                   check preprocess; run "$stage" "$@" ;;
    train|bench)                                          check train; run "$stage" "$@" ;;
    eval|tune-lm|eval-lm|export|eval-pretrained|bench-serve) check eval; run "$stage" "$@" ;;
    dist-scheduler|envcheck|serve)                        run "$stage" "$@" ;;
    # The whole job on an NVIDIA GPU, each step after its envcheck, which then checks the GPU too.
    train-gpu)   DS2_ARGS="${DS2_ARGS:-} --set train.device=GPU"
                 check preprocess; run preprocess || exit
                 check train; run train || exit
                 check eval; run eval "$@" ;;
    *)           echo "ds2-stage: unknown stage '$stage'; the stages: $stages" >&2; exit 2 ;;
esac
