#!/bin/bash
# Build ds2's oneDNN LSTM operator (ds2/native/onednn_lstm.cc, train.lstm_kernel) in the image's build
# stage: Debian's g++, oneDNN's headers and library from onednn.lock (every wheel checked against its
# hash), the operator and oneDNN's library together in OUT_DIR, the operator finding oneDNN beside it.
#   build-lstm-kernel.sh SOURCE LOCK OUT_DIR
set -euo pipefail
source=$1
lock=$2
out=$3
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends g++ libgomp1
install-python-deps.sh "$lock" /opt/onednn
mkdir -p "$out"
g++ -O2 -std=c++17 -Wall -Werror -shared -fPIC -I/opt/onednn/include "$source" \
    -o "$out/libds2_onednn_lstm.so" -L/opt/onednn/lib -ldnnl -Wl,-rpath,'$ORIGIN'
cp /opt/onednn/lib/libdnnl.so.3 "$out/"   # the name the operator asks for
# The operator must load with nothing but what OUT_DIR holds and the runtime's system libraries.
if ldd "$out/libds2_onednn_lstm.so" | grep -q 'not found'; then
    ldd "$out/libds2_onednn_lstm.so" >&2
    echo "build-lstm-kernel: the operator misses a library (above)" >&2
    exit 1
fi
