#!/usr/bin/env bash
# Builds the testbed of DESIGN.md: N hosts as network namespaces on a shared underlay, each
# with a bridge br0 and M containers that run a small HTTP server answering with their name,
# a client namespace, and a vxgate config per host (in /run/vxgate-testbed/PREFIX/hH.toml).
# Leftovers of an earlier run with the same prefix are removed first.
#
#   testbed/up.sh [--hosts N] [--containers M] [--prefix P] [--kernel-vxlan LIST] [--etcd]
#                 [--offload auto|off] [--docker] [--encrypt] [--mtu N]
#
# --kernel-vxlan LIST (host numbers like 2 or 1,2, or "all"): those hosts get the Linux
# kernel's vxlan device (VNI 42, dstport 4789, flooding to every other host) on br0 instead
# of vxgate's TAP, for interop tests and benchmarks against the kernel.
#
# --etcd: an etcd cluster with one member per host (in the host's namespace, ports
# 23790/23800), and configs with registry.backend = "etcd": each host lists only its own
# containers and no peers; the rest comes from the shared registry (lease_ttl_s = 3).
#
# --docker (implies --etcd): a dockerd in each host's namespace (testbed/lib.sh tb_dockerd_start)
# with a bridge network "vxnet" (10.200.0.0/16, this host's --ip-range 10.200.H.0/24, gateway
# 10.200.H.1, bridge vxbr0, MTU 1450) instead of br0; the TAP vxg0 is left unattached and the
# configs say bridge = "vxbr0", so vxgate attaches it; the M containers per host are Docker
# containers of a busybox image (httpd answering their name) with [docker] in the configs.
#
# --encrypt: the overlay runs inside WireGuard ([overlay.encryption], WireGuard on
# 10.99.0.H:51820, tunnel address 10.250.0.H, no plain VXLAN accepted; the configs have no
# overlay.listen, so no plain VXLAN socket). With --etcd or --docker each host makes its key
# at first start and publishes it through etcd, so nothing is configured per peer; without,
# keys are made here (wg genkey, $STATE/hH/wireguard.key) and every config lists the other
# hosts under [[overlay.encryption.peers]]. A --kernel-vxlan host then runs Debian's
# wireguard-go (interface wg<P>H, the same key) with the kernel's vxlan over it. MTUs are 1390 instead of 1450 (1500 - 20 - 8 - 32 WireGuard - 28 inner - 8 - 14).
#
# --mtu N: the containers', bridges' and TAPs' MTU (default 1450, 1390 with --encrypt).
#
# --offload MODE writes overlay.offload = MODE into the configs (default: vxgate's, "auto").
# Each host's TAP vxg0 is created multi-queue, so vxgate can use one queue per core.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

HOSTS=2 CONTAINERS=2 KERNEL="" ETCD="" OFFLOAD="" DOCKER="" ENCRYPT="" MTU_ARG=""
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) HOSTS=$2; shift 2 ;;
    --containers) CONTAINERS=$2; shift 2 ;;
    --prefix) P=$2; shift 2 ;;
    --kernel-vxlan) KERNEL=$2; shift 2 ;;
    --etcd) ETCD=1; shift ;;
    --offload) OFFLOAD=$2; shift 2 ;;
    --docker) DOCKER=1; ETCD=1; shift ;;
    --encrypt) ENCRYPT=1; shift ;;
    --mtu) MTU_ARG=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) tb_die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || tb_die "needs root (network namespaces)"
[[ $HOSTS =~ ^[0-9]+$ ]] && (( HOSTS >= 1 && HOSTS <= 20 )) || tb_die "--hosts: 1-20"
[[ $CONTAINERS =~ ^[0-9]+$ ]] && (( CONTAINERS >= 0 && CONTAINERS <= 200 )) || tb_die "--containers: 0-200"
tb_init
command -v ip >/dev/null || tb_die "iproute2 is missing (apt-get install iproute2)"
PY=/usr/bin/python3
[ -x $PY ] || tb_die "python3 is missing (apt-get install python3)"
if [ -n "$DOCKER" ]; then
  command -v dockerd >/dev/null && [ -x "$TB_DOCKER" ] || tb_die "docker is missing (apt-get install docker.io)"
  [ -x /bin/busybox ] || tb_die "busybox is missing (apt-get install busybox-static)"
  [ -n "$KERNEL" ] && tb_die "--docker and --kernel-vxlan do not go together"
fi
if [ -n "$ENCRYPT" ] && { [ -z "$ETCD" ] || [ -n "$KERNEL" ]; }; then
  command -v wg >/dev/null || tb_die "wg is missing (apt-get install wireguard-tools)"
fi
if [ -n "$ENCRYPT" ] && [ -n "$KERNEL" ]; then
  command -v wireguard-go >/dev/null || tb_die "wireguard-go is missing (apt-get install wireguard-go)"
  [ -z "$ETCD" ] || tb_die "--kernel-vxlan with --encrypt needs static keys: leave out --etcd"
fi
MTU=1450
[ -n "$ENCRYPT" ] && MTU=1390
if [ -n "$MTU_ARG" ]; then
  [[ $MTU_ARG =~ ^[0-9]+$ ]] && (( MTU_ARG >= 576 && MTU_ARG <= 9000 )) || tb_die "--mtu: 576-9000"
  MTU=$MTU_ARG
fi
if [ -n "$ETCD" ]; then
  command -v etcd >/dev/null || tb_die "etcd is missing (apt-get install etcd-server)"
  command -v etcdctl >/dev/null || tb_die "etcdctl is missing (apt-get install etcd-client)"
fi

tb_teardown
mkdir -p "$STATE"
echo "HOSTS=$HOSTS CONTAINERS=$CONTAINERS" > "$STATE/topology"

UL=$P-ul
ip netns add "$UL"
tb_run "$UL" ip link set lo up
tb_run "$UL" ip link add ul0 type bridge
tb_run "$UL" ip link set ul0 up

# attach NS IFNAME ADDR: a veth from the underlay bridge into NS, named IFNAME there.
attach_underlay() {
  local ns=$1 port=$2 addr=$3
  ip -n "$UL" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$UL" link set "$port" master ul0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}

# static encrypted fleets: every host's key made here, its public key for the others
declare -A WGPUB=()
if [ -n "$ENCRYPT" ] && [ -z "$ETCD" ]; then
  for h in $(seq "$HOSTS"); do
    mkdir -p "$STATE/h$h"
    (umask 077; wg genkey > "$STATE/h$h/wireguard.key")
    WGPUB[$h]=$(wg pubkey < "$STATE/h$h/wireguard.key")
  done
fi

for h in $(seq "$HOSTS"); do
  hns=$P-h$h
  ip netns add "$hns"
  tb_run "$hns" ip link set lo up
  attach_underlay "$hns" "h$h" "10.99.0.$h"
  if [ -n "$DOCKER" ]; then
    # Docker makes the bridge (vxbr0) with the network; vxgate attaches its TAP to it
    ip -n "$hns" tuntap add dev vxg0 mode tap multi_queue
    ip -n "$hns" link set vxg0 mtu "$MTU" up
    tb_dockerd_start "$h"
    tb_docker_image "$h"
    tb_docker "$h" network create --subnet 10.200.0.0/16 --ip-range "10.200.$h.0/24" \
      --gateway "10.200.$h.1" --aux-address "zero=10.200.$h.0" \
      -o com.docker.network.bridge.name=vxbr0 -o com.docker.network.driver.mtu="$MTU" vxnet >/dev/null
    for i in $(seq "$CONTAINERS"); do
      tb_docker_web "$h" "h${h}c$i" 80 --label "app=$(tb_app "$i")"
    done
    continue
  fi
  ip -n "$hns" link add br0 address "$(printf '02:00:0a:c8:%02x:01' "$h")" mtu "$MTU" type bridge
  ip -n "$hns" addr add "10.200.$h.1/16" dev br0
  ip -n "$hns" link set br0 up
  if { [ "$KERNEL" = all ] || [[ ",$KERNEL," == *",$h,"* ]]; } && [ -n "$ENCRYPT" ]; then
    # the kernel's vxlan over a wireguard-go interface: its control socket
    # (/var/run/wireguard/IF.sock) is shared by all namespaces, so the name is the testbed's own
    wgif="wg$P$h"
    (( ${#wgif} <= 15 )) || tb_die "prefix $P too long for a WireGuard interface name"
    ip netns exec "$hns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
      wireguard-go -f "$wgif" > "$STATE/wireguard-go-h$h.log" 2>&1 &
    echo $! > "$STATE/wireguard-go-h$h.pid"
    for _ in $(seq 50); do ip -n "$hns" link show "$wgif" >/dev/null 2>&1 && break; sleep 0.1; done
    tb_run "$hns" wg set "$wgif" private-key "$STATE/h$h/wireguard.key" listen-port 51820
    for o in $(seq "$HOSTS"); do
      [ "$o" = "$h" ] || tb_run "$hns" wg set "$wgif" peer "${WGPUB[$o]}" \
        endpoint "10.99.0.$o:51820" allowed-ips "10.250.0.$o/32"
    done
    ip -n "$hns" addr add "10.250.0.$h/24" dev "$wgif"
    ip -n "$hns" link set "$wgif" mtu 1440 up
    ip -n "$hns" link add vxk type vxlan id 42 dstport 4789 local "10.250.0.$h" dev "$wgif"
    for o in $(seq "$HOSTS"); do
      [ "$o" = "$h" ] || tb_run "$hns" bridge fdb append 00:00:00:00:00:00 dev vxk dst "10.250.0.$o"
    done
    ip -n "$hns" link set vxk mtu "$MTU" master br0 up
  elif [ "$KERNEL" = all ] || [[ ",$KERNEL," == *",$h,"* ]]; then
    ip -n "$hns" link add vxk type vxlan id 42 dstport 4789 local "10.99.0.$h" dev eth0
    for o in $(seq "$HOSTS"); do
      [ "$o" = "$h" ] || tb_run "$hns" bridge fdb append 00:00:00:00:00:00 dev vxk dst "10.99.0.$o"
    done
    ip -n "$hns" link set vxk mtu "$MTU" master br0 up
  else
    ip -n "$hns" tuntap add dev vxg0 mode tap multi_queue
    ip -n "$hns" link set vxg0 mtu "$MTU" master br0 up
  fi
  for i in $(seq "$CONTAINERS"); do
    cns=$P-h${h}c$i
    ip netns add "$cns"
    tb_run "$cns" ip link set lo up
    ip -n "$hns" link add "c$i" mtu "$MTU" type veth peer name eth0 netns "$cns"
    ip -n "$hns" link set "c$i" master br0 up
    ip -n "$cns" link set eth0 address "$(tb_cmac "$h" "$i")" mtu "$MTU" up
    ip -n "$cns" addr add "$(tb_cip "$h" "$i")/16" dev eth0
    ip -n "$cns" route add default via "10.200.$h.1"
    mkdir -p "/etc/netns/$cns"
    echo "nameserver 10.200.$h.1" > "/etc/netns/$cns/resolv.conf"
    # not through tb_run: a function would run in a subshell and $! would be that shell's
    ip netns exec "$cns" $PY "$here/backend.py" --name "h${h}c$i" --port 80 \
      >"$STATE/h${h}c$i.log" 2>&1 &
    echo $! > "$STATE/h${h}c$i.pid"
  done
done

ip netns add "$P-cl"
tb_run "$P-cl" ip link set lo up
attach_underlay "$P-cl" cl 10.99.0.100

# One vxgate config per host: its overlay peers, DNS, ingress and every container of every
# host (remote ones carry node = "hN"; they resolve in DNS and are reached through the overlay).
for h in $(seq "$HOSTS"); do
  peers="" peer_nodes="" peer_gateways=""
  for o in $(seq "$HOSTS"); do
    [ "$o" = "$h" ] && continue
    peers+="${peers:+, }\"10.99.0.$o:4789\""
    peer_nodes+="${peer_nodes:+, }h$o = \"10.99.0.$o:4789\""
    peer_gateways+="${peer_gateways:+, }h$o = [\"10.200.$o.1\"]"
  done
  {
    echo "# vxgate config for host h$h of testbed '$P' (written by testbed/up.sh)"
    echo "[node]"
    echo "name = \"h$h\""
    echo "state_dir = \"$STATE/h$h\""
    echo
    if [ -n "$ETCD" ]; then
      echo "[registry]"
      echo "backend = \"etcd\""
      echo "endpoints = [\"$(tb_etcd_endpoints | sed 's/,/", "/g')\"]"
      echo "lease_ttl_s = 3"
      echo
    fi
    echo "[overlay]"
    # encrypted: no plain VXLAN socket at all
    [ -z "$ENCRYPT" ] && echo "listen = \"10.99.0.$h:4789\""
    [ -n "$OFFLOAD" ] && echo "offload = \"$OFFLOAD\""
    if [ -z "$ETCD" ] && [ -z "$ENCRYPT" ]; then
      echo "peers = [$peers]"
      echo "peer_nodes = { $peer_nodes }"
      echo "peer_gateways = { $peer_gateways }"
    fi
    echo
    echo "[[overlay.networks]]"
    echo "name = \"default\""
    echo "vni = 42"
    echo "tap = \"vxg0\""
    echo "mtu = $MTU"
    [ -n "$DOCKER" ] && echo "bridge = \"vxbr0\""
    echo
    if [ -n "$ENCRYPT" ]; then
      echo "[overlay.encryption]"
      echo "mode = \"wireguard\""
      echo "listen = \"10.99.0.$h:51820\""
      echo "address = \"10.250.0.$h\""
      echo
      if [ -z "$ETCD" ]; then
        for o in $(seq "$HOSTS"); do
          [ "$o" = "$h" ] && continue
          echo "[[overlay.encryption.peers]]"
          echo "public_key = \"${WGPUB[$o]}\""
          echo "endpoint = \"10.99.0.$o:51820\""
          echo "address = \"10.250.0.$o\""
          echo
        done
      fi
    fi
    if [ -n "$DOCKER" ]; then
      echo "[docker]"
      echo "endpoint = \"unix://$(tb_ddir "$h")/docker.sock\""
      echo "network = \"vxnet\""
      echo
    fi
    echo "[dns]"
    echo "listen = [\"10.200.$h.1:53\"]"
    echo "zone = \"example.com\""
    echo "recursion_from = [\"10.200.0.0/16\", \"127.0.0.0/8\"]"
    echo
    echo "[ingress]"
    echo "listen = [\"10.99.0.$h:443\"]"
    echo "http_redirect = [\"10.99.0.$h:80\"]"
    others=$(seq "$HOSTS")
    [ -n "$ETCD" ] && others=$h   # the others come from etcd
    [ -n "$DOCKER" ] && others=""  # Docker's containers come from Docker
    for oh in $others; do
      for i in $(seq "$CONTAINERS"); do
        echo
        echo "[[containers]]"
        echo "name = \"h${oh}c$i\""
        echo "ip = \"$(tb_cip "$oh" "$i")\""
        echo "mac = \"$(tb_cmac "$oh" "$i")\""
        echo "port = 80"
        echo "node = \"h$oh\""
        echo "labels = { app = \"$(tb_app "$i")\" }"
      done
    done
  } > "$STATE/h$h.toml"
done

if [ -n "$ETCD" ]; then
  for h in $(seq "$HOSTS"); do tb_etcd_start "$h"; done
  healthy=""
  for _ in $(seq 100); do
    if tb_run "$P-h1" env ETCDCTL_API=3 etcdctl --endpoints "$(tb_etcd_endpoints)" \
        --command-timeout=1s endpoint health >/dev/null 2>&1; then healthy=1; break; fi
    sleep 0.2
  done
  [ -n "$healthy" ] || tb_die "etcd cluster not healthy; see $STATE/etcd-h*.log"
fi

# Wait until every backend answers (bounded).
for h in $(seq "$HOSTS"); do
  [ -n "$DOCKER" ] && break   # docker run returned: httpd is the container's first process
  for i in $(seq "$CONTAINERS"); do
    cns=$P-h${h}c$i
    for _ in $(seq 50); do
      tb_run "$cns" $PY -c "import socket; socket.create_connection(('127.0.0.1', 80), 0.2)" 2>/dev/null && break
      sleep 0.1
    done
  done
done
echo "testbed '$P' up: $HOSTS hosts x $CONTAINERS containers; configs in $STATE/h*.toml"
