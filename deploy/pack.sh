#!/usr/bin/env bash
# Builds the gateway release tarball that deploy/pi/install.sh installs: a `pnpm deploy` of
# @ferry/cli (the built dist of it and its workspace packages, production node_modules only),
# self-contained, so the target needs Node 20 and nothing from a registry.
#
#   deploy/pack.sh [--out DIR] [--skip-build] [--online]
#
# better-sqlite3's native module is built for this machine's CPU and Node ABI; install.sh
# rebuilds it from the bundled sources on a Pi when it does not load there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/deploy/out"
BUILD=1
OFFLINE=(--offline)
PNPM=(npx --yes pnpm@12.21.0)

usage() {
  echo "usage: deploy/pack.sh [--out DIR] [--skip-build] [--online]"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    --online) OFFLINE=(); shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "pack: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$ROOT"
if [[ $BUILD -eq 1 ]]; then
  npx tsc -b
fi
if [[ ! -f apps/ferry/dist/main.js ]]; then
  echo "pack: apps/ferry/dist/main.js is missing: run \`npx tsc -b\` (or drop --skip-build)" >&2
  exit 1
fi

VERSION=$(node -p "require('./apps/ferry/package.json').version")
ARCH=$(node -p 'process.arch')
ABI=$(node -p 'process.versions.modules')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
NAME="ferry-gateway-$VERSION-linux-$ARCH"

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/ferry-pack.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# Copies, not hard links into the pnpm store: the tree is tarred, and a rebuild of the native
# module must never write through a link into the store. The lockfile was vetted by the
# workspace install already; its release-age check needs registry metadata we do not fetch.
"${PNPM[@]}" --filter @ferry/cli deploy --prod "${OFFLINE[@]}" \
  --config.minimum-release-age=0 --config.package-import-method=copy "$STAGE/ferry" >&2

DIR="$STAGE/ferry"
# Sources, tests and build files are not needed at run time (node never uses the ferry-source condition).
rm -rf "$DIR/src" "$DIR/test" "$DIR/tsconfig.json" "$DIR/pnpm-workspace.yaml" "$DIR/pnpm-lock.yaml"
for pkg in "$DIR"/node_modules/.pnpm/@ferry+*/node_modules/@ferry/*; do
  rm -rf "$pkg/src" "$pkg/test" "$pkg/tsconfig.json" "$pkg"/*.tsbuildinfo
  find "$pkg/dist" -name '*.map' -delete 2>/dev/null || true
done
# Keep better-sqlite3's deps/ and src/: they are what a rebuild on the target compiles.
for bsq in "$DIR"/node_modules/.pnpm/better-sqlite3@*/node_modules/better-sqlite3; do
  rm -rf "$bsq/build/Release/obj.target" "$bsq/build/Release/.deps" "$bsq/build/Release/test_extension.node"
done
mkdir -p "$DIR/docs"
for doc in operations.md raspberry-pi.md; do
  if [[ -f "$ROOT/docs/$doc" ]]; then cp "$ROOT/docs/$doc" "$DIR/docs/"; fi
done
cat > "$DIR/RELEASE" <<INFO
name=$NAME
version=$VERSION
commit=$COMMIT
arch=$ARCH
node_abi=$ABI
INFO

mkdir -p "$OUT"
tar -C "$STAGE" -czf "$OUT/$NAME.tar.gz" ferry
echo "$OUT/$NAME.tar.gz"
