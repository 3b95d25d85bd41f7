#!/usr/bin/env bash
# Policy from Docker labels (issue 31), on the e2e 21 setup: dockerd (--iptables=false) on two
# hosts, etcd, one vxnet bridge per host joined by vxgate's overlay. On h2 an api container
# labelled vxgate.allow_from=web:8080: h1's web container fetches from it across the overlay,
# h1's "other" container cannot (the connection times out), and h2's own web can; the same
# container re-run without the label takes everyone again (a label change by restart holds
# within 1 s of Docker's event) and the table is gone.
. "$(dirname "$0")/lib.sh"
command -v nft >/dev/null || fail "nft is missing (apt-get install nftables)"
up --hosts 2 --containers 1 --docker
tb_docker_web 1 other 80 --label app=other
tb_docker_web 2 h2api 8080 --label app=api --label vxgate.allow_from=web:8080
start_vxgate 1
start_vxgate 2
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# fetch H CONTAINER URL: wget inside a Docker container of host H (5 s)
fetch() { timeout 5 "$TB_DOCKER" -H "unix://$(tb_ddir "$1")/docker.sock" exec "$2" wget -q -O - "$3" 2>/dev/null; }
table_of() { on "h$1" nft list table inet vxgate 2>/dev/null; }
has_rules() { table_of 2 | grep -q "jump p"; }
for _ in $(seq 200); do has_rules && break; sleep 0.05; done
has_rules || fail "h2 has no policy table for h2api: $(on h2 curl -s http://127.0.0.1:9180/v1/policy)"
api=$(tb_docker_ip 2 h2api)
[ -n "$api" ] || fail "no address for h2api"
got=""
for _ in $(seq 40); do got=$(fetch 1 h1c1 "http://$api:8080/" || true); [ "$got" = h2api ] && break; sleep 0.25; done
[ "$got" = h2api ] || fail "h1's web could not fetch from h2api:8080: '$got'"
[ "$(fetch 2 h2c1 "http://$api:8080/" || true)" = h2api ] || fail "h2's web could not fetch from h2api:8080"
if fetch 1 other "http://$api:8080/" >/dev/null; then fail "h1's other container reached h2api"; fi
policy=$(on h2 curl -s http://127.0.0.1:9180/v1/policy)
echo "$policy" | grep -q '"container": "h2api"' || fail "GET /v1/policy does not list h2api: $policy"
pass "Docker labels: h2api (vxgate.allow_from=web:8080) answers h1's and h2's web, not h1's other; /v1/policy lists it"

# re-run without the label: open again, and the table gone
tb_docker 2 rm -f h2api >/dev/null
t0=$(now_ms)
tb_docker_web 2 h2api 8080 --label app=api
gone() { ! table_of 2 >/dev/null; }
for _ in $(seq 200); do gone && break; sleep 0.05; done
gone || fail "h2's table stayed after the label went away"
gone_ms=$(( $(now_ms) - t0 ))
api=$(tb_docker_ip 2 h2api)
got=""
for _ in $(seq 40); do got=$(fetch 1 other "http://$api:8080/" || true); [ "$got" = h2api ] && break; sleep 0.25; done
[ "$got" = h2api ] || fail "h1's other could not fetch from the unlabelled h2api: '$got'"
pass "h2api re-run without the label: the table gone ${gone_ms} ms after docker run (rm and run included), h1's other reaches it"
