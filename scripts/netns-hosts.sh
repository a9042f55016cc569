#!/bin/sh
# Test "hosts" on one Linux machine, for multi-host tests of lavaflow.
#
# Each host is a network namespace with its own UTS (hostname) and IPC
# namespace, so two hosts share neither a network stack nor System V/POSIX
# IPC: processes on different hosts can only talk over the (virtual) wire,
# exactly as on two machines. The hosts hang off one bridge that lives in a
# namespace of its own, so no traffic ever touches the machine's real
# network:
#
#   [PREFIX-h1: eth0 10.77.0.1/24]--veth--+
#   [PREFIX-h2: eth0 10.77.0.2/24]--veth--+--[PREFIX-sw: bridge br0]
#   ...                                   |
#
# Usage (root):
#   netns-hosts.sh up    [-p PREFIX] [-n HOSTS] [-s SUBNET]   create (default lf, 2, 10.77.0)
#   netns-hosts.sh down  [-p PREFIX]                          remove, killing what runs there
#   netns-hosts.sh exec  [-p PREFIX] HOST CMD [ARGS...]       run CMD on host HOST (1, 2, ...)
#   netns-hosts.sh addr  [-p PREFIX] HOST                     print the host's address
#   netns-hosts.sh counters [-p PREFIX] HOST                  print "rx_bytes tx_bytes" of its eth0
#   netns-hosts.sh list  [-p PREFIX]                          show the hosts
#   netns-hosts.sh rsh   HOSTNAME CMD...                      an ssh stand-in for mpirun:
#       mpirun --mca plm_rsh_agent "netns-hosts.sh rsh" --host PREFIX-host1,PREFIX-host2 ...
#       (run mpirun itself on host 1: netns-hosts.sh exec 1 mpirun ...)
#
# Host i is network namespace PREFIX-hi with hostname PREFIX-hosti and
# address SUBNET.i. Its UTS and IPC namespaces are kept in
# /run/lavaflow-netns/PREFIX-hi.{uts,ipc} (bind mounts), so every process
# started with `exec` on the same host shares them (LOCAL scope, shared
# memory works) while processes on different hosts do not (REMOTE scope).
set -eu

prefix=lf
hosts=2
subnet=10.77.0
state=/run/lavaflow-netns

usage() {
  sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
while [ $# -gt 0 ]; do
  case "$1" in
    -p) prefix=$2; shift 2 ;;
    -n) hosts=$2; shift 2 ;;
    -s) subnet=$2; shift 2 ;;
    *) break ;;
  esac
done

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "netns-hosts.sh: must run as root (network, UTS and IPC namespaces)" >&2
    exit 77
  fi
}

ns() { echo "$prefix-h$1"; }

host_count() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^$prefix-h[0-9]*\$" || true
}

up() {
  need_root
  case "$prefix" in *[!a-zA-Z0-9]*) echo "prefix must be alphanumeric" >&2; exit 2 ;; esac
  [ ${#prefix} -le 8 ] || { echo "prefix '$prefix' is longer than 8 characters" >&2; exit 2; }
  [ "$(host_count)" = 0 ] || { echo "hosts with prefix '$prefix' exist; run down first" >&2; exit 1; }
  mkdir -p "$state"
  sw="$prefix-sw"
  ip netns add "$sw"
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  i=1
  while [ "$i" -le "$hosts" ]; do
    n=$(ns "$i")
    ip netns add "$n"
    # The pair is created in the switch namespace (no name clash with the
    # machine's interfaces) and one end moved into the host.
    ip -n "$sw" link add "h$i" type veth peer name "eth0" netns "$n"
    ip -n "$sw" link set "h$i" master br0 up
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$subnet.$i/24" dev eth0
    ip -n "$n" link set eth0 up
    # Persistent UTS + IPC namespaces for the host, with its hostname.
    for t in uts ipc; do : >"$state/$n.$t"; done
    unshare --uts="$state/$n.uts" --ipc="$state/$n.ipc" hostname "$prefix-host$i"
    i=$((i + 1))
  done
  # No wait for the links: they forward at once (no STP on br0), and
  # lavaflow's connects retry until their deadline anyway.
}

down() {
  need_root
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$prefix-\(h[0-9]*\|sw\)\$" || true); do
    pids=$(ip netns pids "$n" 2>/dev/null || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    for t in uts ipc; do
      if [ -e "$state/$n.$t" ]; then
        umount "$state/$n.$t" 2>/dev/null || true
        rm -f "$state/$n.$t"
      fi
    done
    ip netns del "$n"
  done
}

on_host() {
  n=$(ns "$1")
  [ -e "/run/netns/$n" ] || { echo "no host $1 (namespace $n); run up first" >&2; exit 1; }
}

case "$cmd" in
  up) up ;;
  down) down ;;
  exec)
    [ $# -ge 2 ] || usage
    on_host "$1"
    n=$(ns "$1")
    shift
    # UTS and IPC of the host, then its network (ip netns exec also mounts
    # the namespace's /sys, so /sys/class/net shows the host's interfaces).
    exec nsenter --uts="$state/$n.uts" --ipc="$state/$n.ipc" -- ip netns exec "$n" "$@"
    ;;
  addr)
    [ $# -eq 1 ] || usage
    on_host "$1"
    ip -n "$(ns "$1")" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1
    ;;
  counters)
    [ $# -eq 1 ] || usage
    on_host "$1"
    ip netns exec "$(ns "$1")" sh -c 'echo "$(cat /sys/class/net/eth0/statistics/rx_bytes) $(cat /sys/class/net/eth0/statistics/tx_bytes)"'
    ;;
  rsh)
    # Open MPI calls its agent as "<agent> [options] <host> <command line>",
    # the command line being shell text (PATH=...; export PATH; orted ...).
    while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
    [ $# -ge 2 ] || usage
    host=$1
    shift
    case "$host" in *-host[0-9]*) ;; *) echo "netns-hosts.sh rsh: '$host' is not a PREFIX-hostN name" >&2; exit 1 ;; esac
    exec "$0" exec -p "${host%-host*}" "${host##*-host}" sh -c "$*"
    ;;
  list)
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$prefix-h[0-9]*\$" || true); do
      i=${n#"$prefix-h"}
      echo "host $i: namespace $n, hostname $(nsenter --uts="$state/$n.uts" hostname), address $("$0" addr -p "$prefix" "$i")"
    done
    ;;
  *) usage ;;
esac
