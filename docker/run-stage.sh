#!/bin/sh
# Run one pipeline stage in the container, after envcheck has cleared the environment for it.
#   ds2-stage STAGE COMMAND...      e.g.  ds2-stage train ds2 train --preset small
# Set DS2_ENVCHECK_ARGS="--preset seed" (or --config FILE) to check for the model the stage runs.
# envcheck exit codes: 0 ready, 2 warnings only (go on), 1 blocking problem, 3 envcheck crashed.
set -u
stage=$1
shift
# DS2_ENVCHECK_ARGS: the preset/config options of the stage, so envcheck sizes the same model.
# shellcheck disable=SC2086
python -m envcheck --stage "$stage" ${DS2_ENVCHECK_ARGS:-}
status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
    echo "ds2-stage: envcheck found a blocking problem for '$stage' (exit $status); see the diagnosis above. Not starting the stage." >&2
    exit "$status"
fi
exec "$@"
