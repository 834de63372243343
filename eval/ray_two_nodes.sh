#!/usr/bin/env bash
# A two-node Ray cluster (1 CPU each) on loopback inside a private network namespace, then the Ray-engine benchmark
# against it (result: eval/results/bench_scale_ray_160_2nodes.json). Needs root for `unshare -n`:
#   unshare -n bash eval/ray_two_nodes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
R=$PWD/.venv/bin
T=$(mktemp -d /tmp/ray2n-XXXX)  # short: Ray's socket paths must stay under 107 characters
ip link set lo up
export HOME=$T/home RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$T/home/.ray/auth_token
mkdir -p "$HOME"
"$R/ray" get-auth-token --generate >/dev/null
"$R/ray" start --head --node-ip-address 127.0.0.1 --port 6390 --num-cpus 1 --temp-dir "$T/t" \
    --include-dashboard=false --disable-usage-stats
trap '"$R/ray" stop --force >/dev/null; rm -rf "$T"' EXIT
"$R/ray" start --address 127.0.0.1:6390 --node-ip-address 127.0.0.1 --num-cpus 1 --disable-usage-stats
nice -n 5 "$R/python" eval/bench_scale.py ray --cases 160 --shard-size 16 --queries 60 --workers 1,2 \
    --address 127.0.0.1:6390 --name bench_scale_ray_160_2nodes
