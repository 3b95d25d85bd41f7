#!/usr/bin/env bash
# The dashboard (issue 34) in a real browser: headless Chromium (Debian's, through
# chromium-driver and Selenium; testbed/dashboard.py) against two vxgates. On h1 (no token,
# loopback): the Services page shows every service and backend with the health GET
# /v1/services gives; the Containers page every container, a label that is markup
# (<img src=x onerror=alert(1)>) as text with no <img>, no alert, no console error (and the
# same string inserted as markup does run: the positive control); the Fleet, DNS and Overlay
# pages draw; a backend stopped turns unhealthy on the open page within 3 s without a
# reload; the Events page lists the transition, newest first. On h2 (admin.token_file): the
# login form, a wrong token refused, the right one kept in sessionStorage only; then h2 stops
# and h1's Fleet page lists it among the nodes that left, with when. Screenshots of
# every page: /tmp/vxgate-e2e-40-dashboard/.
# e2e-timeout: 240
. "$(dirname "$0")/lib.sh"
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || fail "chromium and chromium-driver are missing (apt-get install chromium chromium-driver)"
/usr/bin/python3 -c 'import selenium' 2>/dev/null || fail "python3-selenium is missing (apt-get install python3-selenium)"
up --hosts 2 --containers 2 --etcd
token=dashboard-$RANDOM$RANDOM
printf '%s\n' "$token" > "$STATE/h2-token"
printf '\n[admin]\nlisten = "127.0.0.1:9180"\ntoken_file = "%s"\n' "$STATE/h2-token" >> "$STATE/h2.toml"
start_vxgate 1
start_vxgate 2
curl_h1() { on h1 curl -sS --max-time 5 "$@"; }
code=$(curl_h1 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' http://127.0.0.1:9180/v1/containers \
  -d '{"name":"marked","ip":"10.200.1.99","port":80,"labels":{"app":"web","note":"<img src=x onerror=alert(1)>"}}')
[ "$code" = 201 ] || fail "POST the container with a markup label: $code"
# the page's headers: the policy that forbids inline script, no framing
headers=$(curl_h1 -sD - -o /dev/null http://127.0.0.1:9180/ui/)
echo "$headers" | grep -qi "^content-security-policy: default-src 'none'; script-src 'self'" || fail "no strict CSP on /ui/: $headers"
echo "$headers" | grep -qi '^x-frame-options: DENY' || fail "no X-Frame-Options on /ui/"
# some traffic, so that the pages have rates to draw: HTTPS to web and api, DNS queries
stop=$LOGDIR/stop-load
( while [ ! -e "$stop" ]; do
    for h in web api; do on cl curl -sk -o /dev/null --max-time 2 --resolve "$h.example.com:443:10.99.0.1" "https://$h.example.com/" || true; done
    on h1c2 dig +short +time=1 +tries=1 @10.200.1.1 web.example.com >/dev/null || true
    sleep 0.05
  done ) &
load=$!
shots=/tmp/vxgate-e2e-40-dashboard
rm -rf "$shots"; mkdir -p "$shots"
victims=$(ip netns pids "$P-h1c1" | tr '\n' ' ')
[ -n "$victims" ] || fail "nothing runs in h1c1"
on h1 env HOME="$shots" /usr/bin/python3 "$TESTBED/dashboard.py" open http://127.0.0.1:9180 "$shots" kill $victims \
  > "$LOGDIR/dashboard-open.txt" 2>&1 || { cat "$LOGDIR/dashboard-open.txt"
touch "$stop"; wait "$load" || true; fail "the dashboard on h1"; }
cat "$LOGDIR/dashboard-open.txt"
touch "$stop"; wait "$load" || true
on h2 env HOME="$shots" /usr/bin/python3 "$TESTBED/dashboard.py" token http://127.0.0.1:9180 "$shots" "$token" \
  > "$LOGDIR/dashboard-token.txt" 2>&1 || { cat "$LOGDIR/dashboard-token.txt"; fail "the dashboard's login on h2"; }
cat "$LOGDIR/dashboard-token.txt"
# h2 stops (its lease is revoked): h1's Fleet page says it left, and when
stop_vxgate 2
on h1 env HOME="$shots" /usr/bin/python3 "$TESTBED/dashboard.py" left http://127.0.0.1:9180 "$shots" h2 \
  > "$LOGDIR/dashboard-left.txt" 2>&1 || { cat "$LOGDIR/dashboard-left.txt"; fail "the fleet page after h2 left"; }
cat "$LOGDIR/dashboard-left.txt"
n=$(ls "$shots"/*.png 2>/dev/null | wc -l)
[ "$n" -ge 9 ] || fail "only $n screenshots in $shots"
pass "dashboard in Chromium: pages match the API, markup labels stay text, live health, events, login; $n screenshots in $shots"
