#!/usr/bin/env bash
# Fetch TensorRT's Python binding wheels, newest 10.x and 11.x, for this Python, for tests/trt_api.
#
#   .ci/trt-bindings.sh [DEST]
#     DEST defaults to $SEGNET_TRT_BINDINGS, else ${XDG_CACHE_HOME:-~/.cache}/segnet/trt-bindings (where the
#     test looks). Wheels already there are kept, so DEST can be a CI cache.
#   TRT_BINDINGS_VERSIONS  the versions to fetch (default: the pinned pair below); "latest" asks the index
#                          for the newest 10.x and 11.x instead
#   TRT_BINDINGS_PACKAGE   default tensorrt-cu13-bindings (the cu12 build has the same Python API)
#   PYTHON                 the interpreter whose wheel tag to fetch for (default python3)
#
# Only the ~1.3 MB bindings wheels (module tensorrt_bindings) come down, never TensorRT's libraries: the
# test compiles stand-ins for the nine C symbols the bindings need. Never install these in CI's Python.
set -euo pipefail

dest=${1:-${SEGNET_TRT_BINDINGS:-${XDG_CACHE_HOME:-$HOME/.cache}/segnet/trt-bindings}}
python=${PYTHON:-python3}
package=${TRT_BINDINGS_PACKAGE:-tensorrt-cu13-bindings}
versions=${TRT_BINDINGS_VERSIONS:-10.16.1.11 11.4.0.106}

if [ "$versions" = latest ]; then
  # pip lists the newest first; plain releases only (no .post, rc)
  available=$("$python" -m pip index versions "$package" 2>/dev/null \
              | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n')
  versions=""
  for major in 10 11; do
    version=$(grep -E "^$major\.[0-9]+(\.[0-9]+)*$" <<<"$available" | head -n 1 || true)
    [ -n "$version" ] || { echo "trt-bindings: no $package $major.x on the index" >&2; exit 1; }
    versions="$versions $version"
  done
fi

mkdir -p "$dest"
tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
for version in $versions; do
  if compgen -G "$dest/${package//-/_}-$version-$tag-*.whl" >/dev/null; then
    echo "trt-bindings: have $package $version ($tag) in $dest"
    continue
  fi
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" "$package==$version"
  echo "trt-bindings: fetched $package $version ($tag) into $dest"
done
