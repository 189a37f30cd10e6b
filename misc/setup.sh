#!/bin/sh
# Installs what flowctl needs on Debian 12 (as root) and builds it. Safe to run again.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "misc/setup.sh: run as root (it installs packages and mounts bpffs)" >&2
  exit 1
fi
# The meter's toolchain, then what the tests, demo and benchmarks drive (prometheus: the dashboard
# test runs its own, on a loopback port it picks; the packaged service is not needed; nfdump and
# pmacct: the independent collectors the fault and sampling tests check our exports against, each
# run by the test on a loopback port, never as the packaged service; snmpd and snmp: the akvorado
# recipe's test runs net-snmp's agent in a lab namespace to read IF-MIB as akvorado would; nftables: the
# drops test drops packets with a firewall rule in a lab router).
packages="clang llvm libbpf-dev bpftool iproute2 util-linux \
  iputils-ping ethtool tshark iperf3 softflowd netsniff-ng linux-perf time tmux prometheus nfdump pmacct \
  clang-format snmpd snmp nftables"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
npm ci --no-audit --no-fund
npm run build
