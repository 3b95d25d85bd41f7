#!/usr/bin/env bash
# Least privilege (issue 33, item 3; policy: issue 31): both hosts' vxgate run as the unprivileged user nobody
# with only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (setpriv: ambient, inheritable and
# bounding sets), as the systemd unit will run it, and do the demo's job: ping across the
# overlay, DNS on :53, HTTPS on :443 landing on both hosts. /dev/net/tun is 0666 on Debian
# hosts (udev); where it is not, each vxgate sees a 0666 node of it in a mount namespace of
# its own, so nothing outside the test changes. Negative controls: without CAP_NET_ADMIN, and
# without CAP_NET_BIND_SERVICE, vxgate stops at start with one line naming the capability.
. "$(dirname "$0")/lib.sh"
up --hosts 2 --containers 1
USER_ID=$(id -u nobody) GROUP=$(id -gn nobody)

# start_unprivileged H CAPS [CONFIG]: vxgate on host H as nobody with CAPS (like
# "+net_admin,+net_bind_service"); waits for "vxgate running" unless NO_WAIT is set
start_unprivileged() {
  local h=$1 caps=$2 cfg=${3:-$STATE/h$1.toml} log=$LOGDIR/vxgate-h$1.log node=$LOGDIR/tun-h$1
  mkdir -p "$STATE/h$h"
  chown nobody:"$GROUP" "$STATE/h$h"
  rm -f "$node"
  mknod -m 666 "$node" c 10 200
  ip netns exec "$P-h$h" unshare --mount --propagation private sh -c '
    mount --bind "$1" /dev/net/tun
    shift
    exec setpriv --reuid=nobody --regid="$1" --clear-groups --inh-caps="-all,$2" \
      --ambient-caps="-all,$2" --bounding-set="-all,$2" "$3" run --config "$4"' \
    sh "$node" "$GROUP" "$caps" "$VXGATE" "$cfg" > "$log" 2>&1 &
  VX_PIDS+=($!)
  eval "VX_PID_$h=$!"
  [ -n "${NO_WAIT:-}" ] && return 0
  wait_running "h$h (as nobody)" "$!" "$log"
}

# negative controls first: one capability missing each time, a clear line, no start
expect_refused() {  # CAPS CAPABILITY
  NO_WAIT=1 start_unprivileged 1 "$1"
  local pid=$VX_PID_1 rc=0
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
  alive "$pid" && fail "vxgate without $2 is still running: $(tail -3 "$LOGDIR/vxgate-h1.log")"
  wait "$pid" || rc=$?
  [ "$rc" != 0 ] || fail "vxgate without $2 exited 0"
  local line
  line=$(grep -E "ERROR.*$2" "$LOGDIR/vxgate-h1.log" | head -1)
  [ -n "$line" ] || fail "without $2, no error line names it: $(tail -3 "$LOGDIR/vxgate-h1.log")"
  echo "${line#*ERROR }" | cut -c1-200
}
no_admin=$(expect_refused "+net_bind_service" CAP_NET_ADMIN)
no_bind=$(expect_refused "+net_admin" CAP_NET_BIND_SERVICE)
pass "refused at start, exit != 0, one line each: without CAP_NET_ADMIN: $no_admin; without CAP_NET_BIND_SERVICE: $no_bind"

# policy too (nftables needs CAP_NET_ADMIN, which the nft vxgate runs inherits): h2c1 takes
# web and the ingress, which is everything the checks below send it
for h in 1 2; do
  sed -i '/^name = "h2c1"$/,/^labels/ s/^labels = .*/labels = { app = "web", "vxgate.allow_from" = "web,ingress" }/' "$STATE/h$h.toml"
done
for h in 1 2; do start_unprivileged "$h" "+net_admin,+net_bind_service"; done
st=/proc/$VX_PID_1/status
uid=$(awk '/^Uid:/ {print $3}' "$st") capeff=$(awk '/^CapEff:/ {print $2}' "$st") capbnd=$(awk '/^CapBnd:/ {print $2}' "$st")
[ "$uid" = "$USER_ID" ] || fail "vxgate runs as uid $uid, not nobody"
# CAP_NET_BIND_SERVICE is bit 10, CAP_NET_ADMIN bit 12: 0x1400, nothing else
[ "$capeff" = 0000000000001400 ] && [ "$capbnd" = 0000000000001400 ] \
  || fail "capabilities: effective $capeff, bounding $capbnd (want 0000000000001400)"

on h1c1 ping -c 3 -i 0.2 -W 2 10.200.2.11 >/dev/null || fail "no ping across the overlay"
ips=$(on h1c1 dig +short +time=2 +tries=1 @10.200.1.1 web.example.com | sort | tr '\n' ' ')
[ "$ips" = "10.200.1.11 10.200.2.11 " ] || fail "DNS on :53 answered '$ips'"
seen=""
for _ in $(seq 6); do seen+=" $(https_get web.example.com /)"; done
for c in h1c1 h2c1; do echo "$seen" | grep -qw "$c" || fail "HTTPS on :443 never reached $c: $seen"; done
key=$STATE/h1/tls/self-signed.key
[ -f "$key" ] || fail "no self-signed key in the state_dir"
[ "$(stat -c '%U %a' "$key")" = "nobody 600" ] || fail "the key: $(stat -c '%U %a' "$key")"
bad=$(find "$STATE/h1" -newer "$LOGDIR/tun-h1" \( -perm /077 -a -type f \) -o \( -perm /027 -a -type d -a ! -path "$STATE/h1" \) | head -3)
[ -z "$bad" ] || fail "written with group/other access: $bad"
on h2 nft list table inet vxgate | grep -q "jump p0" || fail "h2's vxgate (as nobody) made no policy table"
grep -q "policy: table inet vxgate in place protected=1" "$LOGDIR/vxgate-h2.log" || fail "h2 logged no policy table"
pass "as nobody with only CAP_NET_ADMIN + CAP_NET_BIND_SERVICE (effective = bounding = 0x1400): ping across the overlay, DNS :53 -> $ips, HTTPS :443 reached$seen; the state_dir's files are nobody's, 0600; h2's policy table made through nft with the inherited CAP_NET_ADMIN"
