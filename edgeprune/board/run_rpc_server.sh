#!/bin/sh
# Start a TVM RPC server on the board and register it with the tracker on the edgeprune host,
# so `edgeprune deploy --device rpc://TRACKER_HOST:PORT/KEY` can upload and time artifacts here.
#
# Needs on the board (once), the same TVM versions that compiled the artifact
# (see "tvm_version" in the artifact's model.json):
#   python3 -m pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 cloudpickle
#
# Usage:  sh run_rpc_server.sh TRACKER_HOST:PORT [KEY] [extra rpc_server options...]
#   KEY defaults to rasp4b (the raspberry-pi-4 target's key; raspberry-pi-5 uses rasp5).
#   Extra options go to tvm.exec.rpc_server, e.g. --custom-addr BOARD_IP when the tracker
#   cannot reach the address the board reports (NAT, several interfaces).
# Environment: PYTHON (default python3).
set -eu

PYTHON="${PYTHON:-python3}"

usage() {
    echo "usage: sh $0 TRACKER_HOST:PORT [KEY] [rpc_server options...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
TRACKER="$1"
shift
case "$TRACKER" in
    *:*) ;;
    *) echo "error: the tracker must be HOST:PORT, got '$TRACKER'" >&2; usage ;;
esac
KEY="rasp4b"
if [ $# -ge 1 ]; then
    case "$1" in
        -*) ;;
        *) KEY="$1"; shift ;;
    esac
fi

if ! "$PYTHON" -c "import tvm, cloudpickle" >/dev/null 2>&1; then
    echo "error: $PYTHON cannot import tvm and cloudpickle; on the board run:" >&2
    echo "  $PYTHON -m pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 cloudpickle" >&2
    exit 1
fi

echo "TVM $("$PYTHON" -c 'import tvm; print(tvm.__version__)'): registering with tracker $TRACKER as key '$KEY'" >&2
exec "$PYTHON" -m tvm.exec.rpc_server --tracker "$TRACKER" --key "$KEY" "$@"
