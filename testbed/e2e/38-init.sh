#!/usr/bin/env bash
# `vxgate init` on a Docker host (issue 33): on h1 of a two-host Docker fleet (etcd), init
# finds the host's underlay address (no default route here: the first address not on the
# containers' side), Docker's vxnet network with its bridge, gateway and MTU, and writes a
# config that `check` accepts; run again it refuses to overwrite (the file unchanged). Then
# h1 runs on exactly that config (only state_dir moved into the testbed): its DNS answers
# web.example.com with both hosts' web containers, and its ingress serves h2's web across the
# overlay — the demo's checks, on a config nobody wrote by hand.
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1 --docker
cfg=$LOGDIR/init-h1.toml
eps=$(tb_etcd_endpoints)
# --docker: Docker must answer (the contract's flag); --etcd repeated, one URL each
etcd_args=()
for e in ${eps//,/ }; do etcd_args+=(--etcd "$e"); done
out=$(on h1 "$VXGATE" init --docker --config "$cfg" --node h1 "${etcd_args[@]}" \
  --docker-endpoint "unix://$(tb_ddir 1)/docker.sock" 2>&1) || fail "vxgate init: $out"
echo "$out"
for want in 'name = "h1"' 'backend = "etcd"' 'listen = "10.99.0.1:4789"' 'bridge = "vxbr0"' \
            'network = "vxnet"' 'listen = ["10.200.1.1:53"]' 'recursion_from = ["10.200.0.0/16", "127.0.0.0/8"]' \
            "endpoint = \"unix://$(tb_ddir 1)/docker.sock\"" 'mtu = 1450'; do
  grep -qF "$want" "$cfg" || { cat "$cfg"; fail "the config from init lacks: $want"; }
done
grep -qF "endpoints = [\"${eps//,/\", \"}\"]" "$cfg" || { cat "$cfg"; fail "the config from init lacks the etcd endpoints $eps"; }
"$VXGATE" check --config "$cfg" >/dev/null || fail "check refused init's config"
sum=$(sha256sum < "$cfg")
if on h1 "$VXGATE" init --config "$cfg" --node other >/dev/null 2>&1; then fail "init overwrote $cfg"; fi
[ "$(sha256sum < "$cfg")" = "$sum" ] || fail "init changed the existing $cfg"
# --docker where Docker does not answer: refused, nothing written
if on h1 "$VXGATE" init --docker --config "$LOGDIR/none.toml" --docker-endpoint unix:///nonexistent.sock >/dev/null 2>&1; then
  fail "init --docker succeeded without Docker"
fi
[ ! -e "$LOGDIR/none.toml" ] || fail "init --docker without Docker wrote a config"
pass "vxgate init on h1: underlay 10.99.0.1, Docker network vxnet on vxbr0 (gateway 10.200.1.1, MTU 1450), etcd; check accepts it; a second init refused, the file unchanged; --docker without Docker refused"

sed "s|^state_dir = .*|state_dir = \"$STATE/h1init\"|" "$cfg" > "$LOGDIR/h1-run.toml"
start_vxgate 1 "$LOGDIR/h1-run.toml"
start_vxgate 2
want="$(tb_docker_ip 1 h1c1) $(tb_docker_ip 2 h2c1)"
want=$(printf '%s\n' $want | sort | tr '\n' ' ' | sed 's/ $//')
got=""
for _ in $(seq 100); do
  got=$(on h1 dig +short +time=1 +tries=1 @10.200.1.1 web.example.com | sort | tr '\n' ' ' | sed 's/ $//')
  [ "$got" = "$want" ] && break
  sleep 0.1
done
[ "$got" = "$want" ] || fail "h1 (init's config) answers web.example.com with '$got', want '$want'"
seen=""
for _ in $(seq 40); do
  seen+=" $(on cl curl -sk --max-time 2 --resolve web.example.com:443:10.99.0.1 https://web.example.com/ || true)"
  echo "$seen" | grep -qw h2c1 && break
  sleep 0.1
done
echo "$seen" | grep -qw h2c1 || fail "h1's ingress (init's config) never reached h2's web:$seen"
pass "h1 on init's config: DNS web.example.com = $want; HTTPS through h1's ingress reached h2c1 across the overlay"
