#!/usr/bin/env bash
# Runs librdkafka's own test suite (Debian's librdkafka 2.0.2 source
# package) against `sluice broker` on loopback, skipping the tests in
# tests/librdkafka/skip.txt. Every other test of the quick run (-Q, no
# sockem network emulation, no tests librdkafka marks as known issues) must
# pass.
#
# Usage: tests/librdkafka/run.sh [SLUICE_BINARY]
# Needs: a deb-src entry for Debian (it adds one), build-essential, zlib.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
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

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data="$(mktemp -d)"
"$sluice" broker --listen "127.0.0.1:$port" --data-dir "$data" \
  --override group.initial.rebalance.delay.ms=0 --override num.partitions=4 \
  >"$work/broker.log" 2>&1 &
broker=$!
stop_broker() {
  kill "$broker" 2>/dev/null || true
  wait "$broker" 2>/dev/null || true
  rm -rf "$data"
}
trap stop_broker EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

skip=$(grep -v '^#' "$here/skip.txt" | awk 'NF { print $1 }' | paste -sd, -)
cd "$work/librdkafka-$version/tests"
printf 'bootstrap.servers=127.0.0.1:%s\n' "$port" > test.conf
export LD_LIBRARY_PATH="../src:../src-cpp"
started=$(date +%s)
status=0
TESTS_SKIP="$skip" TEST_KAFKA_VERSION=3.7.0 ./test-runner -p4 -Q -E -K || status=$?
echo "librdkafka suite: exit $status after $(( $(date +%s) - started )) s (broker log: $work/broker.log)"
stop_broker
trap - EXIT
exit "$status"
