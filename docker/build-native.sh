#!/bin/bash
# Build ds2's own operators (ds2/native/*.cc: the LSTM, convolution, CTC loss, BatchNorm and padding
# mask operators behind the train.*_kernel settings, ds2.kernels) into one library in the image's build
# stage: Debian's g++, oneDNN's headers and library from onednn.lock (every wheel checked against its
# hash), the library and oneDNN's together in OUT_DIR, the library finding oneDNN beside it.
#   build-native.sh SOURCE_DIR LOCK OUT_DIR
set -euo pipefail
source=$1
lock=$2
out=$3
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends g++ libgomp1
install-python-deps.sh "$lock" /opt/onednn
mkdir -p "$out"
g++ -O3 -std=c++17 -fopenmp -Wall -Werror -shared -fPIC -I/opt/onednn/include "$source"/*.cc \
    -o "$out/libds2_native.so" -L/opt/onednn/lib -ldnnl -Wl,-rpath,'$ORIGIN'
cp /opt/onednn/lib/libdnnl.so.3 "$out/"   # the name the library asks for
# The library must load with nothing but what OUT_DIR holds and the runtime's system libraries.
if ldd "$out/libds2_native.so" | grep -q 'not found'; then
    ldd "$out/libds2_native.so" >&2
    echo "build-native: the library misses a library (above)" >&2
    exit 1
fi
