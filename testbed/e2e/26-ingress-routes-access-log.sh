#!/usr/bin/env bash
# Routes from labels and the access log (issue 17, items 1 and 2): extra Host names (exact
# and *. wildcard) from vxgate.host, a path prefix from vxgate.path with strip_prefix, the
# longest prefix winning by whole segments, a conflict resolved for the older claim and
# reported; every request of the test in the JSON access log with the right fields, and the
# file reopened on SIGUSR1 after a rename. Issue 30: a service's own name stays its own
# against any label, claims outside ingress.route_hosts are refused and shown, and paths
# are normalised before routing (dot segments, escapes, double slashes).
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 2
# h1c1 is web, h1c2 is api (testbed/lib.sh tb_app); both serve shop.example.org, api only
# under /api (stripped)
cfg=$STATE/h1-routes.toml
ALOG=$LOGDIR/access.log
awk -v alog="$ALOG" '
  /^name = "h1c1"/ { c = 1 } /^name = "h1c2"/ { c = 2 } /^name = "h1c[3-9]"/ { c = 0 }
  /^labels = / && c == 1 { print "labels = { app = \"web\", \"vxgate.host\" = \"shop.example.org,*.shop.example.org\" }"; next }
  /^labels = / && c == 2 { print "labels = { app = \"api\", \"vxgate.host\" = \"shop.example.org\", \"vxgate.path\" = \"/api\", \"vxgate.strip_prefix\" = \"true\" }"; next }
  { print }
  /^http_redirect/ { print "access_log = \"" alog "\""; print "route_hosts = [\"shop.example.org\", \"*.shop.example.org\"]" }' "$STATE/h1.toml" > "$cfg"
grep -q 'vxgate.path' "$cfg" && grep -q "access_log = " "$cfg" || fail "config not rewritten: $(cat "$cfg")"
start_vxgate 1 "$cfg"

REQS=0  # requests made through expect (each must appear once in the access log)
# get HOST PATH: "status container x-path" of one HTTPS request through h1's ingress. The
# self-signed certificate covers example.com and *.example.com only: other names use -k.
get() {
  local host=$1 path=$2 tls=(--cacert "$STATE/h1/tls/self-signed.crt")
  case $host in *.example.com) ;; *) tls=(-k) ;; esac
  on cl curl -sS --path-as-is --max-time 10 "${tls[@]}" --resolve "$host:443:10.99.0.1" -o /dev/null \
    -D - -w '%{http_code}\n' "https://$host$path" \
    | tr -d '\r' | awk '/^x-container:/ { c = $2 } /^x-path:/ { p = $2 } /^[0-9][0-9][0-9]$/ { s = $1 } END { print s, c, p }'
}
expect() {  # HOST PATH STATUS [CONTAINER [X-PATH]]
  local got want="$3${4:+ $4}${5:+ $5}"
  REQS=$((REQS + 1))
  got=$(get "$1" "$2" | sed 's/ *$//')
  [ "$got" = "$want" ] || fail "https://$1$2: got '$got', expected '$want'"
}
expect shop.example.org / 200 h1c1 /
expect shop.example.org '/api/users?id=1' 200 h1c2 '/users?id=1'
expect shop.example.org /api 200 h1c2 /
expect shop.example.org /apix 200 h1c1 /apix
expect www.shop.example.org /x 200 h1c1 /x
expect a.b.shop.example.org / 200 h1c1 /
expect api.example.com /api/v1 200 h1c2 /v1
expect api.example.com /other 404
expect web.example.com /any/path 200 h1c1 /any/path
expect nothing.example.org / 404
pass "shop.example.org: / -> web, /api/users?id=1 -> api as /users?id=1, /apix -> web; *.shop.example.org -> web; api.example.com only under /api; unknown names 404"

# a newer service claiming shop.example.org/ loses to web, and the conflict is reported
on h1 "$VXGATE" ctl add --name late-1 --ip 10.200.1.99 --port 80 --label app=late \
  --label vxgate.host=shop.example.org >/dev/null || fail "ctl add failed"
expect shop.example.org / 200 h1c1 /
services=$(on h1 curl -sS http://127.0.0.1:9180/v1/services)
echo "$services" | /usr/bin/python3 -c '
import json, sys
s = {x["name"]: x for x in json.load(sys.stdin)}
c = s["late"]["conflicts"]
assert c == [{"host": "shop.example.org", "prefix": "/", "serving": "web", "left_out": "late"}], c
assert {"host": "late.example.com", "prefix": "/", "strip_prefix": False} in s["late"]["routes"], s["late"]
api = {(r["host"], r["prefix"], r["strip_prefix"]) for r in s["api"]["routes"]}
assert api == {("api.example.com", "/api", True), ("shop.example.org", "/api", True)}, api
' || fail "GET /v1/services: $services"
grep -q "two services claim one route.*left_out=late" "$LOGDIR/vxgate-h1.log" || fail "no conflict log line"
conflicts=$(on h1 curl -sS http://127.0.0.1:9180/metrics | awk '$1 == "vxgate_http_route_conflicts" { print $2 }')
[ "$conflicts" = 1 ] || fail "vxgate_http_route_conflicts: '$conflicts'"
pass "late claims shop.example.org/: web (older) keeps it; GET /v1/services and the log name the conflict; 1 counted"

# the access log: one JSON line per request of this test, fields as sent
count_lines() { [ -f "$1" ] && wc -l < "$1" || echo 0; }
for _ in $(seq 100); do [ "$(count_lines "$ALOG")" -ge "$REQS" ] && break; sleep 0.05; done
/usr/bin/python3 - "$ALOG" "$REQS" <<'PY' || fail "access log: $(tail -3 "$ALOG")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == int(sys.argv[2]), f"{len(lines)} lines for {sys.argv[2]} requests"
fields = {"time", "client", "tls", "sni", "method", "host", "path", "status", "bytes_in",
          "bytes_out", "duration_ms", "service", "backend", "retries", "upstream_status"}
for l in lines:
    assert set(l) == fields, sorted(set(l) ^ fields)
    assert l["client"].startswith("10.99.0.100:") and l["tls"] == "1.3" and l["method"] == "GET", l
api = [l for l in lines if l["path"] == "/api/users"]
assert len(api) == 1, [l["path"] for l in lines]
a = api[0]
assert (a["status"], a["service"], a["backend"], a["upstream_status"]) == (200, "api", "h1c2", 200), a
assert a["host"] == "shop.example.org" and a["sni"] == "shop.example.org", a
assert a["bytes_out"] == len("h1c2\n") and a["bytes_in"] == 0 and a["retries"] == 0, a
assert a["duration_ms"] > 0 and a["time"].endswith("Z"), a
assert all("?" not in l["path"] for l in lines), "query strings are left out by default"
miss = [l for l in lines if l["status"] == 404]
assert len(miss) == 2 and all(l["service"] is None and l["backend"] is None for l in miss), miss
print(f"{len(lines)} lines")
PY
dropped=$(on h1 curl -sS http://127.0.0.1:9180/metrics | awk '$1 == "vxgate_http_access_log_lines_total{result=\"dropped\"}" { print $2 }')
[ "$dropped" = 0 ] || fail "access log lines dropped: '$dropped'"
pass "access log: $REQS requests, $REQS JSON lines, fields checked (api's line: service, backend, status, sni, bytes, no query), 0 dropped"

# logrotate: the file is renamed, SIGUSR1, and the next line goes to a new file
mv "$ALOG" "$ALOG.1"
kill -USR1 "$VX_PID_1"
sleep 0.2
expect web.example.com /after-rotate 200 h1c1 /after-rotate
for _ in $(seq 100); do [ "$(count_lines "$ALOG")" -ge 1 ] && break; sleep 0.05; done
[ "$(count_lines "$ALOG")" = 1 ] && grep -q '"path":"/after-rotate"' "$ALOG" || fail "no new access log after SIGUSR1: $(ls -l "$LOGDIR")"
[ "$(count_lines "$ALOG.1")" = $((REQS - 1)) ] || fail "the old file changed: $(count_lines "$ALOG.1") lines"
grep -q "access log reopened" "$LOGDIR/vxgate-h1.log" || fail "no reopen log line"
kill -0 "$VX_PID_1" || fail "vxgate died"
pass "SIGUSR1 after a rename: the next line went to a new access.log, the old one kept its $((REQS - 1))"

# issue 30, item 3: evil claims web's own name, the whole zone, a name outside route_hosts,
# and /login: every claim refused, web keeps web.example.com on every path
on h1 "$VXGATE" ctl add --name evil-1 --ip 10.200.1.97 --port 80 --label app=evil \
  --label 'vxgate.host=web.example.com,*.example.com,evil.example.org' --label vxgate.path=/login \
  >/dev/null || fail "ctl add evil failed"
expect web.example.com /login 200 h1c1 /login
expect web.example.com / 200 h1c1 /
expect nothing.example.com /login 404
expect evil.example.org /login 404
services=$(on h1 curl -sS http://127.0.0.1:9180/v1/services)
echo "$services" | /usr/bin/python3 -c '
import json, sys
s = {x["name"]: x for x in json.load(sys.stdin)}
refused = sorted((r["host"], r["why"]) for r in s["evil"]["refused"])
assert refused == [("*.example.com", "not in ingress.route_hosts"),
                   ("evil.example.org", "not in ingress.route_hosts"),
                   ("web.example.com", "the own name of another service")], refused
assert [r["host"] for r in s["evil"]["routes"]] == ["evil.example.com"], s["evil"]["routes"]
' || fail "GET /v1/services: $services"
grep -q "route claim refused.*web.example.com" "$LOGDIR/vxgate-h1.log" || fail "no refusal log line"
pass "evil's claims on web.example.com, *.example.com and evil.example.org refused and shown; web.example.com/login still web"

# issue 30, item 4: one normalised path is routed and forwarded
expect shop.example.org '/api/../secret.txt' 200 h1c1 /secret.txt
expect shop.example.org '/api/%2e%2e/secret.txt' 200 h1c1 /secret.txt
expect shop.example.org '/api//evil.com/x' 200 h1c2 /evil.com/x
expect shop.example.org '/api/./v1/../v2' 200 h1c2 /v2
expect shop.example.org '/api/..%2fsecret.txt' 400
expect shop.example.org '/api/%5c..%5csecret.txt' 400
pass "/api/../secret.txt and /api/%2e%2e/secret.txt left /api (web, as /secret.txt); /api//evil.com/x reached api as /evil.com/x; encoded / and \\ refused with 400"
