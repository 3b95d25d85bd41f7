#!/usr/bin/env bash
# Builds the Debian package: target/debian/vxgate_<version>-1_<arch>.deb. The release binary
# (built here if missing or stale), its man page and shell completions, the starter config
# (a conffile), the systemd unit, and the maintainer scripts of dist/debian/.
#
#   dist/build-deb.sh          (needs cargo-deb: cargo install cargo-deb --locked)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || [ -x "$HOME/.cargo/bin/cargo-deb" ] \
  || { echo "build-deb: cargo-deb is missing (cargo install cargo-deb --locked)" >&2; exit 1; }
cargo build --release -p vxgate
bin=target/release/vxgate
mkdir -p target/dist
"$bin" manpage | gzip -9n > target/dist/vxgate.1.gz
"$bin" completions bash > target/dist/vxgate.bash
"$bin" completions zsh > target/dist/_vxgate
"$bin" completions fish > target/dist/vxgate.fish
cargo deb -p vxgate --no-build --strip --output target/debian/ 2>&1 | tail -1
