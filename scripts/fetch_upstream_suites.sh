#!/usr/bin/env bash
# Fetch the test suites that ship in the pinned pyserial and python-can source distributions,
# for python/tests/upstream (issue 14, drop-in fidelity). Idempotent: an existing extraction is
# reused. Prints the two test directories.
#   XOQ_UPSTREAM   where to put them (default ~/.cache/xoq/upstream)
#   PIP            the pip to download with (default: the test venv's, else python3 -m pip)
set -euo pipefail
DEST="${XOQ_UPSTREAM:-$HOME/.cache/xoq/upstream}"
VENV="${XOQ_VENV:-$HOME/.cache/xoq/venv}"
if [ -z "${PIP:-}" ]; then
    if [ -x "$VENV/bin/pip" ]; then PIP="$VENV/bin/pip"; else PIP="python3 -m pip"; fi
fi
mkdir -p "$DEST"
# The sdist's file name: pip may normalise "python-can" to "python_can".
find_sdist() {
    local f
    for f in "$DEST/$1-$2.tar.gz" "$DEST/${1//-/_}-$2.tar.gz"; do
        if [ -f "$f" ]; then echo "$f"; return; fi
    done
}
for spec in pyserial==3.5 python-can==4.6.1; do
    name="${spec%%==*}"; version="${spec##*==}"
    dir="$DEST/$name-$version"
    if [ ! -d "$dir/test" ]; then
        sdist="$(find_sdist "$name" "$version")"
        if [ -z "$sdist" ]; then
            $PIP download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
                -d "$DEST" "$spec" >&2
            sdist="$(find_sdist "$name" "$version")"
            test -n "$sdist" || { echo "pip download $spec left no sdist in $DEST" >&2; exit 1; }
        fi
        tmp="$(mktemp -d "$DEST/.extract.XXXXXX")"
        tar --no-same-owner -xzf "$sdist" -C "$tmp"
        rm -rf "$dir"
        mv "$tmp"/*-"$version" "$dir"
        rmdir "$tmp"
        test -d "$dir/test" || { echo "no test/ directory in $sdist" >&2; exit 1; }
    fi
    echo "$dir/test"
done
