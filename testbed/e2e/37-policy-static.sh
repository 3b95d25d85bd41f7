#!/usr/bin/env bash
# Policy in a static fleet (no etcd, issue 31): the other hosts' gateway addresses come from
# overlay.peer_gateways (testbed/up.sh writes them). h2's api container (h2c2) labelled
# vxgate.allow_from = "ingress": h1's ingress reaches it across the overlay (h1's gateway is
# let in on h2 and passes h2's source validation), h1's web container does not; with the label
# gone, web reaches it (the positive control).
. "$(dirname "$0")/lib.sh"
command -v nft >/dev/null || fail "nft is missing (apt-get install nftables)"
up --hosts 2 --containers 2
for h in 1 2; do
  grep -q 'peer_gateways = { h[12] = \["10.200.[12].1"\] }' "$STATE/h$h.toml" || fail "h$h's config has no peer_gateways"
  sed -i '/^name = "h2c2"$/,/^labels/ s/^labels = .*/labels = { app = "api", "vxgate.allow_from" = "ingress" }/' "$STATE/h$h.toml"
  grep -q '"vxgate.allow_from" = "ingress"' "$STATE/h$h.toml" || fail "h$h's config: no label"
done
for h in 1 2; do start_vxgate "$h"; done
reach() { on "$1" curl -s -o /dev/null --max-time 2 "http://$2:80/"; }
for _ in $(seq 100); do on h2 nft list table inet vxgate 2>/dev/null | grep -q "jump p" && break; sleep 0.05; done
on h2 nft list table inet vxgate | grep -A3 'set ingress_v4' | grep -Eq '[{ ]10\.200\.1\.1[ ,}]' || fail "h2's ingress set lacks h1's gateway: $(on h2 nft list table inet vxgate)"
if reach h1c1 10.200.2.12; then fail "h1's web reached h2's api, which lets in only the ingress"; fi
seen=""
for _ in $(seq 60); do
  seen+=" $(https_get api.example.com / 2>/dev/null || true)"
  echo "$seen" | grep -q h2c2 && break
  sleep 0.2
done
echo "$seen" | grep -q h2c2 || fail "h1's ingress never reached h2c2:$seen"
drops=$(on h2 curl -s http://127.0.0.1:9180/metrics | sed -n 's/^vxgate_overlay_drops_total{network="default",reason="forged_source"} //p')
[ "${drops:-x}" = 0 ] || fail "h2 dropped legitimate frames as forged: '$drops'"
pass "static fleet: h1's ingress reaches h2's api (h1's gateway from peer_gateways, 0 frames dropped as forged), h1's web does not"
for h in 1 2; do
  sed -i 's/labels = { app = "api", "vxgate.allow_from" = "ingress" }/labels = { app = "api" }/' "$STATE/h$h.toml"
  kill -HUP "$(eval echo "\$VX_PID_$h")"
done
ok=""
for _ in $(seq 20); do reach h1c1 10.200.2.12 && { ok=1; break; }; sleep 0.2; done
[ -n "$ok" ] || fail "without the label h1's web still cannot reach h2's api"
pass "label removed: h1's web reaches h2's api"
