#!/usr/bin/env bash
# Sticky sessions (issue 17, item 3): vxgate.sticky=cookie sets an opaque cookie naming the
# backend that answered (Secure; HttpOnly; SameSite=Lax); 20 requests with it stay on that
# backend while clients without it are balanced; when that backend dies, the next request is
# answered by the other one and the cookie is set anew, naming it.
. "$(dirname "$0")/lib.sh"
up --hosts 1 --containers 3
# h1c1 and h1c3 serve web (testbed/lib.sh tb_app), both sticky
cfg=$STATE/h1-sticky.toml
awk '
  /^name = "h1c1"/ || /^name = "h1c3"/ { c = 1 } /^name = "h1c2"/ { c = 0 }
  /^labels = / && c == 1 { print "labels = { app = \"web\", \"vxgate.sticky\" = \"cookie\" }"; next }
  { print }' "$STATE/h1.toml" > "$cfg"
[ "$(grep -c 'vxgate.sticky' "$cfg")" = 2 ] || fail "config not rewritten: $(cat "$cfg")"
start_vxgate 1 "$cfg"
CA=$STATE/h1/tls/self-signed.crt
# req [COOKIE]: "container set-cookie-or-dash" of one request to web.example.com
req() {
  on cl curl -sS --max-time 10 --cacert "$CA" --resolve web.example.com:443:10.99.0.1 \
    ${1:+-H "Cookie: other=1; $1"} -D - https://web.example.com/ | tr -d '\r' \
    | awk 'tolower($1) == "set-cookie:" { sub(/^[^ ]* /, ""); sc = $0 } /^h1c[0-9]$/ { c = $0 } END { print c, (sc == "" ? "-" : sc) }'
}
read -r first setc <<<"$(req)"
[[ "$setc" =~ ^vxgate_web=[0-9a-f]{32}\;\ Path=/\;\ Secure\;\ HttpOnly\;\ SameSite=Lax$ ]] \
  || fail "first response's Set-Cookie: '$setc' (from $first)"
cookie=${setc%%;*}
[ "$first" = h1c1 ] || [ "$first" = h1c3 ] || fail "first answered by '$first'"
seen=""
for _ in $(seq 20); do
  read -r c sc <<<"$(req "$cookie")"
  [ "$c" = "$first" ] || fail "with the cookie a request went to $c, not $first"
  [ "$sc" = - ] || fail "a pinned request set a cookie again: $sc"
done
for _ in $(seq 4); do read -r c _ <<<"$(req)"; seen+=" $c"; done
echo "$seen" | grep -qw h1c1 && echo "$seen" | grep -qw h1c3 || fail "clients without the cookie are not balanced:$seen"
pass "cookie $cookie from $first: 20 requests with it all on $first, none re-set; without it:$seen"

# the sticky backend dies: the next request goes to the other one, with a new cookie
kill -KILL "$(cat "$STATE/$first.pid")"
other=h1c3; [ "$first" = h1c3 ] && other=h1c1
read -r c sc <<<"$(req "$cookie")"
[ "$c" = "$other" ] || fail "after $first died, the request went to '$c'"
newcookie=${sc%%;*}
[[ "$newcookie" =~ ^vxgate_web=[0-9a-f]{32}$ ]] && [ "$newcookie" != "$cookie" ] \
  || fail "the cookie was not set anew for $other: '$sc'"
for _ in $(seq 5); do
  read -r c sc <<<"$(req "$newcookie")"
  [ "$c" = "$other" ] && [ "$sc" = - ] || fail "with the new cookie: $c $sc"
done
pass "$first killed: the next request (old cookie) answered by $other with a new cookie; 5 more with it stay there"
