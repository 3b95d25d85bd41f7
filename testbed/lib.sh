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
  tb_docker_teardown
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
  # names a test gave a Docker container's namespace (`ip netns attach $P-dH<name> PID`):
  # only the name goes (the container is gone with the Docker daemons above)
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-d[0-9]+[a-z0-9]+$"); do
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

# --- Docker (up.sh --docker): one dockerd per host, started in the host's namespace ---------
# Debian's docker.io CLI (it speaks the 20.10 daemon's API; another `docker` may be first in PATH).
TB_DOCKER=/usr/bin/docker
# tb_ddir H: host H's dockerd directory (data root, exec root, socket, log, pid).
tb_ddir() { echo "$STATE/d$1"; }
# tb_docker H ARGS...: the docker CLI against host H's dockerd.
tb_docker() { local h=$1; shift; "$TB_DOCKER" -H "unix://$(tb_ddir "$h")/docker.sock" "$@"; }

# tb_dockerd_start H: starts (or restarts) host H's dockerd with --live-restore, no iptables
# and no default bridge, and waits until it answers. nsenter, not `ip netns exec`: the latter
# remounts /sys and dockerd then finds no cgroups.
tb_dockerd_start() {
  local h=$1 d
  d=$(tb_ddir "$1")
  mkdir -p "$d/data" "$d/exec"
  nsenter --net="/run/netns/$P-h$h" dockerd --data-root "$d/data" --exec-root "$d/exec" \
    -H "unix://$d/docker.sock" --pidfile "$d/dockerd.pid" --iptables=false --ip-masq=false \
    --bridge=none --live-restore >>"$d/dockerd.log" 2>&1 &
  echo $! > "$d/pid"
  for _ in $(seq 150); do
    tb_docker "$h" version >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$d/pid")" 2>/dev/null || break
    sleep 0.1
  done
  tb_die "dockerd on h$h did not start; see $d/dockerd.log"
}

# tb_dockerd_stop H [SIGNAL]: stops host H's dockerd by its PID (default SIGTERM) and waits
# until it is gone. With --live-restore its containers keep running.
tb_dockerd_stop() {
  local pid
  pid=$(cat "$(tb_ddir "$1")/pid" 2>/dev/null) || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || return 0
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

tb_dockerd_alive() {
  local pid
  pid=$(cat "$(tb_ddir "$1")/pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null
}

# tb_docker_image H: imports the image "vxbox" (a 2 MB root with Debian's static busybox:
# httpd, wget, nslookup, sh) into host H's dockerd; no registry is needed.
tb_docker_image() {
  local root=$STATE/rootfs a
  if [ ! -x "$root/bin/busybox" ]; then
    mkdir -p "$root/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for a in $("$root/bin/busybox" --list); do
      [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
    done
  fi
  tar -C "$root" -c . | tb_docker "$1" import -c 'ENV PATH=/bin' - vxbox >/dev/null
}

# tb_docker_web H NAME PORT [docker run args...]: a container of the vxbox image whose httpd
# answers GET / on PORT with NAME (the HTTP page the tests look for).
tb_docker_web() {
  local h=$1 name=$2 port=$3
  shift 3
  tb_docker "$h" run -d --name "$name" --network vxnet --dns "10.200.$h.1" "$@" vxbox \
    sh -c "mkdir -p /w && echo $name > /w/index.html && exec httpd -f -p $port -h /w" >/dev/null
}

# tb_docker_ip H NAME: a container's address on vxnet.
tb_docker_ip() {
  tb_docker "$1" inspect -f '{{with index .NetworkSettings.Networks "vxnet"}}{{.IPAddress}}{{end}}' "$2"
}

# tb_docker_teardown: removes every dockerd of this prefix and what it made: containers
# (a dockerd that was stopped is started again first, since --live-restore left its
# containers running), the network, the daemon, and the mounts under the state directory.
tb_docker_teardown() {
  local d h
  for d in "$STATE"/d[0-9]*; do
    [ -d "$d/data" ] || continue
    h=${d##*/d}
    tb_dockerd_alive "$h" || (tb_dockerd_start "$h") >/dev/null 2>&1 || true
    if tb_dockerd_alive "$h"; then
      local ids
      ids=$(tb_docker "$h" ps -aq 2>/dev/null || true)
      [ -z "$ids" ] || tb_docker "$h" rm -f $ids >/dev/null 2>&1 || true
      tb_docker "$h" network rm vxnet >/dev/null 2>&1 || true
      tb_dockerd_stop "$h"
    fi
  done
  # dockerd bind-mounts its data root onto itself (and netns files under its exec root)
  if [ -d "$STATE" ]; then
    local m
    for m in $(findmnt -rn -o TARGET | grep "^$STATE/" | sort -r || true); do
      umount -l "$m" 2>/dev/null || true
    done
  fi
}
