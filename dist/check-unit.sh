#!/usr/bin/env bash
# Checks dist/vxgate.service (and vxgate.socket) as systemd reads it: `systemd-analyze verify` (with ExecStart on
# the binary just built, since /usr/bin/vxgate is not installed here) and `systemd-analyze
# security --offline` (the exposure score, printed; above MAX it fails).
#   dist/check-unit.sh [VXGATE] [MAX=2.5]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/vxgate} max=${2:-2.5}
[ -x "$bin" ] || { echo "check-unit: $bin is not built" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/bin/vxgate|$(realpath "$bin")|g" "$here/vxgate.service" > "$dir/vxgate.service"
grep -q "^ExecStart=$(realpath "$bin") run" "$dir/vxgate.service" || { echo "check-unit: ExecStart not rewritten" >&2; exit 1; }
cp "$here/vxgate.socket" "$dir/"
systemd-analyze verify "$dir/vxgate.service" "$dir/vxgate.socket"
out=$(systemd-analyze security --offline=true "$dir/vxgate.service")
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for vxgate.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "check-unit: no exposure score in: $out" >&2; exit 1; }
echo "dist/vxgate.service, dist/vxgate.socket: systemd-analyze verify ok; exposure $score (systemd-analyze security)"
awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' || { printf '%s\n' "$out" >&2; echo "check-unit: exposure $score above $max" >&2; exit 1; }
