#!/usr/bin/env bash
# Fetches the third-party browser code of GraphiQL (GET /graphql) into
# src/ui/vendor/, from the npm registry, at pinned versions, and checks each
# tarball against the sha512 integrity written below before extracting
# anything. The vendored files are committed: building and running the server
# needs neither npm nor the network. Re-run after changing a pin (and put the
# registry's new `dist.integrity` next to it):
#
#   scripts/vendor-ui.sh
#
# The integrity of a version: curl -s https://registry.npmjs.org/<name>/<version>
# | python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["integrity"])'
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY="https://registry.npmjs.org"
OUT="src/ui/vendor"

# name version integrity files (paths inside the tarball's package/ folder)
PACKAGES=(
  "graphiql 3.8.3 sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw== graphiql.min.js graphiql.min.css"
  "react 18.3.1 sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ== umd/react.production.min.js"
  "react-dom 18.3.1 sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw== umd/react-dom.production.min.js"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rm -rf "$OUT"
mkdir -p "$OUT"

for entry in "${PACKAGES[@]}"; do
  read -r name version integrity files <<<"$entry"
  tarball="$work/$name-$version.tgz"
  curl -fsSL "$REGISTRY/$name/-/$name-$version.tgz" -o "$tarball"
  actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [[ "$actual" != "$integrity" ]]; then
    echo "integrity mismatch for $name@$version: expected $integrity, got $actual" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
  for file in $files; do
    cp "$work/$name/package/$file" "$OUT/$(basename "$file")"
  done
  cp "$work/$name/package/LICENSE" "$OUT/LICENSE.$name"
  echo "$name@$version $integrity" >>"$OUT/VERSIONS"
done
ls -l "$OUT"
