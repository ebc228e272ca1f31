#!/usr/bin/env bash
# Runs librdkafka's own test suite (Debian's librdkafka 2.0.2 source
# package) against `sluice broker` on loopback, skipping the tests in
# tests/librdkafka/skip.txt. Every other test of the quick run (-Q, no
# sockem network emulation, no tests librdkafka marks as known issues) must
# pass.
#
# Usage: tests/librdkafka/run.sh [--cluster] [SLUICE_BINARY]
#
# --cluster runs it against the three brokers of config/cluster-*.properties
# (with min.insync.replicas=1, as the suite creates topics of one replica)
# and also skips the tests in skip-cluster.txt.
# Needs: a deb-src entry for Debian (it adds one), build-essential, zlib.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cluster=false
if [ "${1:-}" = "--cluster" ]; then
  cluster=true
  shift
fi
sluice="${1:-$root/target/debug/sluice}"
work="${LIBRDKAFKA_WORK:-$root/target/librdkafka}"
version="2.0.2"

mkdir -p "$work"
if [ ! -x "$work/librdkafka-$version/tests/test-runner" ]; then
  if [ ! -d "$work/librdkafka-$version" ]; then
    if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      cat > /etc/apt/sources.list.d/sluice-debian-src.sources <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    fi
    apt-get update -qq
    apt-get install -y -qq build-essential zlib1g-dev dpkg-dev >/dev/null
    (cd "$work" && apt-get source -qq "librdkafka=$version-1")
  fi
  (
    cd "$work/librdkafka-$version"
    ./configure --disable-ssl --disable-gssapi --disable-zstd --disable-lz4-ext >/dev/null
    make -j"$(nproc)" libs >/dev/null
    cd tests && make -j"$(nproc)" build >/dev/null
  )
fi

data="$(mktemp -d)"
brokers=()
bootstrap=()
start_broker() { # <log name> <sluice broker arguments...>
  local log="$1"
  shift
  "$sluice" broker "$@" --override group.initial.rebalance.delay.ms=0 \
    --override num.partitions=4 >"$work/$log" 2>&1 &
  brokers+=($!)
}
if $cluster; then
  for i in 1 2 3; do
    start_broker "broker-$i.log" --config "$root/config/cluster-$i.properties" \
      --data-dir "$data/$i" --override min.insync.replicas=1
    bootstrap+=("127.0.0.1:${i}9092")
  done
else
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start_broker broker.log --listen "127.0.0.1:$port" --data-dir "$data/0"
  bootstrap+=("127.0.0.1:$port")
fi
stop_broker() {
  kill "${brokers[@]}" 2>/dev/null || true
  wait "${brokers[@]}" 2>/dev/null || true
  rm -rf "$data"
}
trap stop_broker EXIT
for address in "${bootstrap[@]}"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${address%:*}/${address#*:}") 2>/dev/null && break
    sleep 0.1
  done
done
if $cluster; then
  # The offsets topic and the brokers' registrations come a few seconds
  # after the quorum forms.
  for _ in $(seq 60); do
    "$sluice" metadata-quorum --bootstrap-server "${bootstrap[0]}" describe --status \
      >/dev/null 2>&1 && break
    sleep 0.5
  done
  sleep 3
fi

skip_files=("$here/skip.txt")
$cluster && skip_files+=("$here/skip-cluster.txt")
skip=$(cat "${skip_files[@]}" | grep -v '^#' | awk 'NF { print $1 }' | paste -sd, -)
cd "$work/librdkafka-$version/tests"
printf 'bootstrap.servers=%s\n' "$(IFS=,; echo "${bootstrap[*]}")" > test.conf
export LD_LIBRARY_PATH="../src:../src-cpp"
started=$(date +%s)
status=0
TESTS_SKIP="$skip" TEST_KAFKA_VERSION=3.7.0 ./test-runner -p4 -Q -E -K || status=$?
echo "librdkafka suite: exit $status after $(( $(date +%s) - started )) s (broker logs in $work)"
stop_broker
trap - EXIT
exit "$status"
