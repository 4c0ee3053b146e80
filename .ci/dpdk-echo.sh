#!/usr/bin/env bash
# examples/echo_server on DPDK's net_af_packet PMD in a namespace lab, a Linux client
# checking a 16 MB echo by SHA-256 (root). The lab is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/examples/echo_server
n=$$
cl="ftdc$n"; se="ftds$n"; a="fdc$n"; b="fds$n"
cleanup() {
  pkill -INT -f "file-prefix=echo$n" 2>/dev/null || true
  sleep 1
  ip netns del "$cl" 2>/dev/null || true
  ip netns del "$se" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$cl"
ip netns add "$se"
ip link add "$a" type veth peer name "$b"
ip link set "$a" netns "$cl"
ip link set "$b" netns "$se"
ip -n "$cl" addr add 10.79.7.1/24 dev "$a"
ip -n "$cl" link set "$a" up
ip -n "$se" link set "$b" up
ip netns exec "$cl" ethtool -K "$a" tx off rx off tso off gso off gro off >/dev/null
ip netns exec "$se" ethtool -K "$b" tx off rx off tso off gso off gro off >/dev/null
log=$(mktemp)
timeout -s INT 60 "$bin" --backend dpdk --netns "$se" --ip 10.79.7.2 --port 7 \
  --dpdk-args "--no-huge -m 512 --no-pci --no-shconf --no-telemetry --file-prefix=echo$n --vdev=net_af_packet0,iface=$b,blocksz=28672,framesz=1792,framecnt=512" \
  >"$log" 2>&1 &
server=$!
for _ in $(seq 1 50); do
  grep -q "listening\|echo server" "$log" 2>/dev/null && break
  sleep 0.1
done
sleep 1
ip netns exec "$cl" python3 tests/scripts/echo_client.py 10.79.7.2 7 16000000 30
kill -INT "$server"
wait "$server" || true
tail -n 3 "$log"
rm -f "$log"
