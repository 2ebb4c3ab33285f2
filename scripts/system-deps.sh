#!/usr/bin/env bash
# System tools some tests use (network namespaces, nftables, iperf3, FUSE, systemd-analyze, netplan, testparm,
# chromium).
# Installed with apt when running as root and missing; tests that need them skip otherwise.
set -uo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# tests/netns and bench/link: packet loss (nft), the iperf3 baseline, path-MTU pings.
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
# FUSE: tests/watcher mounts a passthrough filesystem as a stand-in for a network share.
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
# tests/test_units.py: `systemd-analyze verify` on the units; tests/render: netplan and testparm
# check the rendered netplan file and smb.conf blocks.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v netplan >/dev/null 2>&1 || need+=(netplan.io)
command -v testparm >/dev/null 2>&1 || need+=(samba-common-bin)
# tests/web: Playwright drives Debian's headless Chromium (never a downloaded browser).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: missing ${need[*]} (not root or no apt): the tests that need them will be skipped" >&2
  exit 0
fi
echo "installing ${need[*]}…" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
  || echo "note: could not install ${need[*]}; the tests that need them will be skipped" >&2
exit 0
