#!/bin/sh
# Run one pipeline stage in the container, after envcheck has cleared the environment for it.
#   ds2-stage STAGE COMMAND...      e.g.  ds2-stage train ds2 train --preset small
# envcheck exit codes: 0 ready, 2 warnings only (go on), 1 blocking problem, 3 envcheck crashed.
set -u
stage=$1
shift
python -m envcheck --stage "$stage"
status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
    echo "ds2-stage: envcheck found a blocking problem for '$stage' (exit $status); see the diagnosis above. Not starting the stage." >&2
    exit "$status"
fi
exec "$@"
