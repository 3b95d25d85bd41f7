# Shared helpers for the testbed scripts. Source it; it sets P (prefix) and STATE.
# Namespaces: $P-ul (underlay bridge), $P-hH (host H), $P-hHcI (container I on host H),
# $P-cl (client). Nothing is created in the root namespace.

tb_die() { echo "testbed: $*" >&2; exit 1; }

tb_init() {
  P=${P:-vx}
  [[ $P =~ ^[a-z][a-z0-9]{0,5}$ ]] || tb_die "prefix '$P': 1-6 lower-case letters/digits, starting with a letter"
  STATE=/run/vxgate-testbed/$P
}

# The namespaces of this prefix that exist now (exact pattern, so other prefixes never match).
tb_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-(ul|cl|h[0-9]+(c[0-9]+)?)$" || true
}

# Removes everything of this prefix: processes in its namespaces, the namespaces, their
# resolv.conf files and the state directory.
tb_teardown() {
  local ns pids
  for ns in $(tb_namespaces); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill $pids 2>/dev/null
  done
  for _ in $(seq 50); do
    local left=""
    for ns in $(tb_namespaces); do left+=$(ip netns pids "$ns" 2>/dev/null); done
    [ -z "$left" ] && break
    sleep 0.1
  done
  for ns in $(tb_namespaces); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  done
  for ns in $(tb_namespaces); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf /etc/netns/"$P"-*
  rm -rf "$STATE"
}

# tb_ip H I: the IP of container I on host H.
tb_cip() { echo "10.200.$1.$((10 + $2))"; }
# tb_mac H I: its MAC (02:00 then the IPv4 address in hex).
tb_cmac() { printf '02:00:0a:c8:%02x:%02x' "$1" "$((10 + $2))"; }
# tb_app I: the service of container I (odd: web, even: api).
tb_app() { if (( $1 % 2 )); then echo web; else echo api; fi; }
# tb_run NS CMD...: runs a command inside a namespace.
tb_run() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# tb_etcd_start H: starts (or restarts, on its data dir) the etcd member of host H in its
# namespace: client port 23790, peer port 23800 on 10.99.0.H (not etcd's defaults), one
# member per host of the topology. The PID goes to $STATE/etcd-hH.pid.
tb_etcd_start() {
  local h=$1 hosts cluster="" o
  hosts=$(sed -n 's/^HOSTS=\([0-9]*\).*/\1/p' "$STATE/topology")
  for o in $(seq "$hosts"); do cluster+="${cluster:+,}h$o=http://10.99.0.$o:23800"; done
  # not through tb_run: a function would run in a subshell and $! would be that shell's
  ip netns exec "$P-h$h" etcd --name "h$h" --data-dir "$STATE/etcd-h$h" \
    --listen-client-urls "http://10.99.0.$h:23790" --advertise-client-urls "http://10.99.0.$h:23790" \
    --listen-peer-urls "http://10.99.0.$h:23800" --initial-advertise-peer-urls "http://10.99.0.$h:23800" \
    --initial-cluster "$cluster" --initial-cluster-token "vxgate-$P" --initial-cluster-state new \
    >>"$STATE/etcd-h$h.log" 2>&1 &
  echo $! > "$STATE/etcd-h$h.pid"
}

# tb_etcd_endpoints: the client URLs of every member, comma-separated.
tb_etcd_endpoints() {
  local hosts out="" o
  hosts=$(sed -n 's/^HOSTS=\([0-9]*\).*/\1/p' "$STATE/topology")
  for o in $(seq "$hosts"); do out+="${out:+,}http://10.99.0.$o:23790"; done
  echo "$out"
}
