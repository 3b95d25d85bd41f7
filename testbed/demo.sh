#!/usr/bin/env bash
# The main job, on one machine: builds vxgate, brings up a two-host testbed (containers
# labelled app=web and app=api on both hosts), starts vxgate on each host (overlay, DNS,
# ingress) and shows a container resolving web.example.com, the overlay, and HTTPS requests
# from the client landing on containers of both hosts. The testbed stays up until
# testbed/down.sh.
#
# --docker: the same story with real Docker: a dockerd per host (Debian's docker.io), etcd,
# one "vxnet" bridge network per host joined by the overlay, and `docker run --label app=web`
# becoming https://web.example.com. The fleet is encrypted: each vxgate makes its WireGuard key
# and publishes it through etcd; the demo shows the underlay carrying WireGuard only, and
# `vxgate ctl peers`.
#
#   testbed/demo.sh [--prefix P] [--docker]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$here/lib.sh"
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) P=$2; shift 2 ;;
    --docker) DOCKER=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) tb_die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || tb_die "needs root (network namespaces)"
tb_init

DOCKER=${DOCKER:-}
need=()
# protoc and the well-known protos build the etcd client (a default feature)
for pair in ip:iproute2 ping:iputils-ping curl:curl dig:bind9-dnsutils /usr/bin/python3:python3 \
    protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
    ${DOCKER:+dockerd:docker.io /usr/bin/docker:docker.io /bin/busybox:busybox-static etcd:etcd-server etcdctl:etcd-client tcpdump:tcpdump}; do
  cmd=${pair%%:*}
  if [ "${cmd:0:1}" = / ]; then [ -e "$cmd" ] || need+=("${pair#*:}")
  else command -v "$cmd" >/dev/null 2>&1 || need+=("${pair#*:}"); fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "demo: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== building vxgate (release)"
(cd "$root" && cargo build --release --bin vxgate 2>&1 | tail -1)
VXGATE=$root/target/release/vxgate

show() { echo "\$ $*"; "$@" 2>&1 | sed 's/^/    /' || true; }

# start_vxgates NOTE: vxgate on both hosts, each waited for until it logs "vxgate running".
start_vxgates() {
  local h
  for h in 1 2; do
    ip netns exec "$P-h$h" "$VXGATE" run --config "$STATE/h$h.toml" >"$STATE/vxgate-h$h.log" 2>&1 &
    echo $! > "$STATE/vxgate-h$h.pid"
  done
  for h in 1 2; do
    for _ in $(seq 100); do grep -q "vxgate running" "$STATE/vxgate-h$h.log" && break; sleep 0.05; done
    grep -q "vxgate running" "$STATE/vxgate-h$h.log" || { tail "$STATE/vxgate-h$h.log"; tb_die "vxgate on h$h did not start"; }
    echo "== vxgate on h$h running (pid $(cat "$STATE/vxgate-h$h.pid")), $1"
  done
}

if [ -n "$DOCKER" ]; then
  echo "== testbed: 2 hosts, each with its own dockerd, etcd, and a Docker network vxnet"
  echo "   (10.200.0.0/16; host H hands out 10.200.H.0/24, gateway 10.200.H.1, bridge vxbr0, MTU 1390)"
  echo "   the overlay runs inside WireGuard: [overlay.encryption], keys made at first start, published in etcd"
  "$here/up.sh" --prefix "$P" --hosts 2 --containers 0 --docker --encrypt
  start_vxgates "with [docker], bridge = \"vxbr0\" and [overlay.encryption]"
  d() { local h=$1; shift; echo "\$ h$h: docker $*"; tb_docker "$h" "$@" 2>&1 | sed 's/^/    /'; }
  echo "== docker run --label app=web on both hosts, --label app=api on h2"
  d 1 run -d --name web1 --network vxnet --dns 10.200.1.1 --label app=web vxbox \
    sh -c 'mkdir -p /w && echo "hello from web1 on h1" > /w/index.html && exec httpd -f -p 80 -h /w'
  d 2 run -d --name web2 --network vxnet --dns 10.200.2.1 --label app=web vxbox \
    sh -c 'mkdir -p /w && echo "hello from web2 on h2" > /w/index.html && exec httpd -f -p 80 -h /w'
  d 2 run -d --name api1 --network vxnet --dns 10.200.2.1 --label app=api --label vxgate.port=8080 vxbox \
    sh -c 'mkdir -p /w && echo "api1 on h2, port 8080" > /w/index.html && exec httpd -f -p 8080 -h /w'
  sleep 0.5
  echo "== every host sees every host's containers (Docker on its host, the others through etcd)"
  show ip netns exec "$P-h1" "$VXGATE" ctl containers
  echo "== DNS: a container on h1 asks Docker's embedded DNS (127.0.0.11), which forwards to vxgate"
  show tb_docker 1 exec web1 sh -c 'nslookup web.example.com'
  echo "== the overlay: web1 on h1 fetches from api1 on h2 by name, sealed by WireGuard between the hosts"
  ip netns exec "$P-h1" tcpdump -i eth0 -n -c 6 --immediate-mode 'udp and host 10.99.0.2' > "$STATE/underlay.txt" 2>/dev/null &
  cap=$!
  sleep 0.5
  show tb_docker 1 exec web1 sh -c 'wget -q -O - http://api.example.com:8080/'
  sleep 0.3; kill "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true
  echo "\$ h1: tcpdump -i eth0 udp and host 10.99.0.2   (the underlay: WireGuard on 51820, no VXLAN 4789)"
  sed 's/^/    /' "$STATE/underlay.txt"
  show ip netns exec "$P-h1" "$VXGATE" ctl peers
  CA=$STATE/h1/tls/self-signed.crt
  echo "== HTTPS: the client asks h1's ingress for web.example.com; round robin over both hosts"
  for _ in 1 2 3 4; do
    show ip netns exec "$P-cl" curl -sS --cacert "$CA" --resolve web.example.com:443:10.99.0.1 https://web.example.com/
  done
  echo "== docker stop web2: gone from DNS and the ingress at once"
  d 2 stop -t 1 web2
  sleep 0.2
  show ip netns exec "$P-h1" dig +short @10.200.1.1 web.example.com
  for _ in 1 2; do
    show ip netns exec "$P-cl" curl -sS --cacert "$CA" --resolve web.example.com:443:10.99.0.1 https://web.example.com/
  done
  cat <<MSG
== where to look next
    docker on host 1:    $TB_DOCKER -H unix://$(tb_ddir 1)/docker.sock ps
    config of host 1:    $STATE/h1.toml
    vxgate logs:         $STATE/vxgate-h1.log, $STATE/vxgate-h2.log
    metrics:             ip netns exec $P-h1 curl -s 127.0.0.1:9180/metrics | grep vxgate_docker
    tear it all down:    testbed/down.sh --prefix $P
MSG
  exit 0
fi

echo "== testbed: 2 hosts x 2 containers (h*c1: app=web, h*c2: app=api)"
"$here/up.sh" --prefix "$P" --hosts 2 --containers 2
start_vxgates "log: $STATE/vxgate-hH.log"

echo "== DNS: a container on h1 resolves the web service through its resolv.conf (10.200.1.1)"
show ip netns exec "$P-h1c2" getent ahosts web.example.com
show ip netns exec "$P-h1c2" dig +noall +answer web.example.com _http._tcp.web.example.com SRV
echo "== the overlay: a container on h1 reaches containers on h2 through vxgate's VXLAN"
show ip netns exec "$P-h1c1" ping -c 3 -i 0.2 -W 2 10.200.2.11
show ip netns exec "$P-h1c1" curl -s --max-time 5 http://h2c2.example.com/

CA=$STATE/h1/tls/self-signed.crt
echo "== HTTPS: the client (10.99.0.100) asks h1's ingress for web.example.com; round robin lands"
echo "   on the web containers of both hosts (h2c1 through the overlay)"
for _ in 1 2 3 4; do
  show ip netns exec "$P-cl" curl -sS --cacert "$CA" --resolve web.example.com:443:10.99.0.1 https://web.example.com/
done
show ip netns exec "$P-cl" curl -sS --http2 -o /dev/null -w 'HTTP/%{http_version} %{http_code} from api.example.com\n' \
  --cacert "$CA" --resolve api.example.com:443:10.99.0.1 https://api.example.com/
show ip netns exec "$P-cl" curl -sS -o /dev/null -w '%{http_code} -> %{redirect_url}\n' --resolve web.example.com:80:10.99.0.1 http://web.example.com/

cat <<MSG
== where to look next
    h1's certificate:    $CA (self-signed for example.com and *.example.com)
    config of host 1:    $STATE/h1.toml
    vxgate logs:         $STATE/vxgate-h1.log, $STATE/vxgate-h2.log
    a container shell:   ip netns exec $P-h1c1 bash
    the client:          ip netns exec $P-cl bash      (10.99.0.100 on the underlay)
    tear it all down:    testbed/down.sh --prefix $P
MSG
