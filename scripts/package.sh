#!/usr/bin/env bash
# package.sh: build dist/stapling-agent-<version>-<release>.<arch>.rpm with nfpm v2.45.2, run as
# a Go tool from tools/go.mod (so it stays out of the product's go.mod), from a static binary.
# `deb` builds dist/stapling-agent_<version>-<release>_<amd64|arm64>.deb from the same config
# instead (the systemd bed installs it with dpkg; Debian names the arches amd64 and arm64).
#
#   scripts/package.sh                    # x86_64
#   ARCHES="x86_64 aarch64" scripts/package.sh
#   VERSION=0.1.1 RELEASE=2 DIST=/tmp/out scripts/package.sh
#   scripts/package.sh deb                # amd64 (ARCHES as above)
#
# Static (CGO_ENABLED=0): Debian's glibc is newer than EL7's and EL8's.
set -euo pipefail
cd "$(dirname "$0")/.."
packager=${1:-rpm}
case "$packager" in
  rpm | deb) ;;
  *) echo "package: unknown packager $packager (rpm, deb)" >&2; exit 2 ;;
esac
export VERSION=${VERSION:-$(cat packaging/VERSION)}
export RELEASE=${RELEASE:-1}
dist=${DIST:-dist}
mkdir -p "$dist"
for arch in ${ARCHES:-x86_64}; do
  case "$arch" in
    x86_64) goarch=amd64 ;;
    aarch64) goarch=arm64 ;;
    *) echo "package: unknown arch $arch (x86_64, aarch64)" >&2; exit 2 ;;
  esac
  ARCH=$arch
  if [ "$packager" = deb ]; then ARCH=$goarch; fi
  BUILD=$(mktemp -d)
  ldflags="-s -w -X github.com/stapling-agent/stapling-agent/agent.Version=$VERSION-$RELEASE"
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -ldflags "$ldflags" \
    -o "$BUILD/stapling-agent" ./agent/cmd/stapling-agent
  # Man pages and bash completion come from the command itself: a native build of the same
  # source and version (the .TH line says "stapling-agent VERSION-RELEASE"). gzip -n: no name
  # or time in the header (Debian policy 12.1, reproducible).
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BUILD/native/stapling-agent" ./agent/cmd/stapling-agent
  mkdir -p "$BUILD/man" "$BUILD/completion"
  "$BUILD/native/stapling-agent" man "$BUILD/man"
  gzip -9n "$BUILD/man/"*.8
  "$BUILD/native/stapling-agent" completion bash >"$BUILD/completion/stapling-agent"
  # nfpm does not expand variables everywhere (not in contents.src): render the config.
  for page in "$BUILD"/man/*.8.gz; do
    printf '  - src: %s\n    dst: /usr/share/man/man8/%s\n    type: doc\n    file_info: {mode: 0644}\n' \
      "$page" "$(basename "$page")"
  done >"$BUILD/man.yaml"
  sed -e "s|\${ARCH}|$ARCH|g; s|\${VERSION}|$VERSION|g; s|\${RELEASE}|$RELEASE|g; s|\${BUILD}|$BUILD|g" \
    -e "/# MANPAGES/r $BUILD/man.yaml" packaging/nfpm.yaml >"$BUILD/nfpm.yaml"
  if [ "$packager" = deb ]; then
    # nfpm leaves files of type doc and license out of every package but the RPM (its
    # files.TypeRPMDoc): the .deb carries the man pages and README as plain files (and the
    # license as Debian's copyright file).
    sed -i -e '/^    type: doc$/d' -e '/^    type: license$/d' "$BUILD/nfpm.yaml"
  fi
  go tool -modfile=tools/go.mod nfpm package --config "$BUILD/nfpm.yaml" --packager "$packager" --target "$dist/" >&2
  rm -rf "$BUILD"
done
if [ "$packager" = deb ]; then
  ls "$dist"/stapling-agent_"$VERSION"-"$RELEASE"_*.deb
else
  ls "$dist"/stapling-agent-"$VERSION"-"$RELEASE".*.rpm
fi
