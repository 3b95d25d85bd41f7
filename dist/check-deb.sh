#!/usr/bin/env bash
# Tests the Debian package on this machine (root): builds it (dist/build-deb.sh), installs it
# with dpkg -i, and checks what an operator gets: the binary (--version, `check` on the
# installed starter config, also as the vxgate user), the system user, /var/lib/vxgate
# (vxgate's, 0700), the config (root:vxgate 0640, a conffile), the unit (systemd-analyze
# verify), the man page, the completions. Then `dpkg -r` keeps the edited config and the
# state, a reinstall keeps the edit, and `dpkg --purge` leaves nothing: no config, no state,
# no user, no group. Refuses to run where vxgate is already installed or its user exists.
#   dist/check-deb.sh [DEB]     (default: build it)
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
if dpkg-query -W -f '${Status}' vxgate 2>/dev/null | grep -q 'installed'; then
  fail "a vxgate package is already installed here: not touching it"
fi
getent passwd vxgate >/dev/null && fail "a vxgate user exists already: not touching it"
[ -e /etc/vxgate ] && fail "/etc/vxgate exists already: not touching it"
deb=${1:-}
if [ -z "$deb" ]; then
  bash dist/build-deb.sh >/dev/null
  deb=$(ls -t target/debian/vxgate_*.deb | head -1)
fi
[ -f "$deb" ] || fail "no package: $deb"
export DEBIAN_FRONTEND=noninteractive
cleanup() { dpkg --purge vxgate >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
[ "$(dpkg-query -W -f '${Status}' vxgate)" = "install ok installed" ] || fail "not installed"
ver=$(/usr/bin/vxgate --version)
echo "$ver" | grep -Eq '^vxgate [0-9]+\.[0-9]+\.[0-9]+ \([0-9a-f]{7,}' || fail "--version: $ver"
/usr/bin/vxgate check --config /etc/vxgate/vxgate.toml >/dev/null || fail "check refused the installed config"
dpkg-query -W -f '${Conffiles}' vxgate | grep -q '/etc/vxgate/vxgate.toml' || fail "the config is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/vxgate/vxgate.toml)" = "root:vxgate 640" ] \
  || fail "config: $(stat -c '%U:%G %a' /etc/vxgate/vxgate.toml)"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd vxgate) || fail "no vxgate user"
[ "$uid" -lt 1000 ] && [ "$home" = /var/lib/vxgate ] && [ "$shell" = /usr/sbin/nologin ] \
  || fail "vxgate user: uid $uid home $home shell $shell"
[ "$(stat -c '%U:%G %a' /var/lib/vxgate)" = "vxgate:vxgate 700" ] || fail "state: $(stat -c '%U:%G %a' /var/lib/vxgate)"
setpriv --reuid vxgate --regid vxgate --clear-groups /usr/bin/vxgate check --config /etc/vxgate/vxgate.toml >/dev/null \
  || fail "the vxgate user cannot read its config"
unit=/usr/lib/systemd/system/vxgate.service
[ -f "$unit" ] || fail "no unit at $unit"
[ -f "${unit%.service}.socket" ] || fail "no socket unit beside $unit"
systemd-analyze verify "$unit" "${unit%.service}.socket" || fail "systemd-analyze verify $unit"
zcat /usr/share/man/man1/vxgate.1.gz | grep -q '^\.TH vxgate 1' || fail "no man page"
bash -n /usr/share/bash-completion/completions/vxgate || fail "bash completion does not parse"
bash -c '. /usr/share/bash-completion/completions/vxgate && complete -p vxgate' >/dev/null || fail "bash completion registers nothing"
grep -q 'compdef vxgate' /usr/share/zsh/vendor-completions/_vxgate || fail "zsh completion"
grep -q 'complete -c vxgate' /usr/share/fish/vendor_completions.d/vxgate.fish || fail "fish completion"
echo "check-deb: installed: $ver; user vxgate (uid $uid), /var/lib/vxgate 0700, config a conffile (root:vxgate 0640) that check accepts, unit and socket unit verified, man page, completions"

# remove keeps the (edited) config and the state; a reinstall keeps the edit
echo '# edited by the operator' >> /etc/vxgate/vxgate.toml
echo key > /var/lib/vxgate/wireguard.key
dpkg -r vxgate >/dev/null
[ ! -e /usr/bin/vxgate ] || fail "dpkg -r left /usr/bin/vxgate"
[ ! -e "$unit" ] && [ ! -e "${unit%.service}.socket" ] || fail "dpkg -r left the units"
grep -q 'edited by the operator' /etc/vxgate/vxgate.toml || fail "dpkg -r lost the edited config"
[ -f /var/lib/vxgate/wireguard.key ] || fail "dpkg -r removed the state"
dpkg -i --force-confold "$deb" >/dev/null
grep -q 'edited by the operator' /etc/vxgate/vxgate.toml || fail "the reinstall replaced the edited config"
/usr/bin/vxgate check --config /etc/vxgate/vxgate.toml >/dev/null || fail "check after the reinstall"
echo "check-deb: dpkg -r kept the edited config and the state; the reinstall kept the edit"

# purge leaves nothing
dpkg --purge vxgate >/dev/null
trap - EXIT
left=""
for p in /etc/vxgate /var/lib/vxgate /usr/bin/vxgate "$unit" /usr/share/man/man1/vxgate.1.gz /usr/share/doc/vxgate; do
  [ -e "$p" ] && left+=" $p"
done
getent passwd vxgate >/dev/null && left+=" user:vxgate"
getent group vxgate >/dev/null && left+=" group:vxgate"
[ -z "$left" ] || fail "dpkg --purge left:$left"
echo "check-deb: dpkg --purge removed the config, the state, the user and the group"
