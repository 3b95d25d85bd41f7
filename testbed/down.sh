#!/usr/bin/env bash
# Removes a testbed: stops every process in its namespaces, deletes the namespaces, their
# /etc/netns resolv.conf files and the state directory.
#
#   testbed/down.sh [--prefix P]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) P=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) tb_die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || tb_die "needs root (network namespaces)"
tb_init
tb_teardown
echo "testbed '$P' down"
