#!/usr/bin/env bash
# System tools some tests use (network namespaces, nftables, iperf3, FUSE, systemd-analyze).
# Installed with apt when running as root and missing; tests that need them skip otherwise.
set -uo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: missing ${need[*]} (not root or no apt): the tests that need them will be skipped" >&2
  exit 0
fi
echo "installing ${need[*]}…" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
  || echo "note: could not install ${need[*]}; the tests that need them will be skipped" >&2
exit 0
