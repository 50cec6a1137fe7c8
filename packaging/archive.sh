#!/usr/bin/env bash
# Builds the archive for Linux systems without dpkg:
#   target/dist/pgwarden-<version>-<target>.tar.gz (+ .sha256)
# holding the binary, the systemd units (systemd/), config.example.toml and README.md.
# Usage: packaging/archive.sh            (PROFILE=dev for a quick unoptimised build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${PROFILE:-release}
cargo build --profile "$profile" --bin pgwarden
case $profile in
    dev) out=target/debug ;;
    *) out=target/$profile ;;
esac
version=$(cargo pkgid | sed 's/.*[#@]//')
target=$(rustc -vV | sed -n 's/^host: //p')
name=pgwarden-$version-$target
stage=target/dist/$name

rm -rf "$stage" "target/dist/$name.tar.gz"
mkdir -p "$stage/systemd"
install -m 0755 "$out/pgwarden" "$stage/pgwarden"
install -m 0644 packaging/systemd/pgwarden.service packaging/systemd/pgwarden-user.service \
    packaging/systemd/pgwarden-backup.service packaging/systemd/pgwarden-backup.timer "$stage/systemd/"
install -m 0644 config.example.toml README.md "$stage/"
tar -C target/dist --owner=0 --group=0 -czf "target/dist/$name.tar.gz" "$name"
(cd target/dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
rm -rf "$stage"
echo "target/dist/$name.tar.gz"
