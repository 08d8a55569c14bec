#!/usr/bin/env bash
# Run every test of the project, installing what the tests need first.
# This is the README's test command and what CI (.ci/run) calls. It must pass on a fresh
# clone of a fresh machine: anything a test needs is installed here, not by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

# One target dir outside the clone, shared by every cargo invocation (and later maturin),
# so CI builds each profile once and a cache can survive between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xoq/target}"
# Tests never use the network: no iroh discovery, no public relays, no mDNS.
export XOQ_OFFLINE=1
# Keys created by tests go to a throw-away home, never into ~/.config/xoq.
export XOQ_HOME="$(mktemp -d)"
trap 'rm -rf "$XOQ_HOME"' EXIT

log() { printf '\n==> %s\n' "$*"; }

log "system packages"
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v cc >/dev/null || missing+=(gcc)
# The deploy tests check generated units with systemd-analyze (no running systemd needed).
command -v systemd-analyze >/dev/null || missing+=(systemd)
# The recorder's fragmented MP4 files are checked with ffprobe, as users would.
command -v ffprobe >/dev/null || missing+=(ffmpeg)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "please install: ${missing[*]}" >&2; exit 1
    fi
fi

# nasm lets OpenH264 build its SIMD kernels (a several times faster H.264 encoder); the build
# works without it, so it is installed where apt is available and skipped elsewhere.
if ! command -v nasm >/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nasm || echo "nasm not installed: H.264 without SIMD" >&2
fi

# The link-fault tests cut links with nftables inside private network namespaces (as root).
if [ "$(id -u)" = 0 ] && ! command -v nft >/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables
fi

log "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "build"
cargo build --workspace --all-targets --quiet

log "feature sets (each service alone builds neither OpenH264 nor moq-relay unless it needs them)"
for features in serial can camera audio depth relay-server serial,can; do
    cargo check --quiet -p xoq --no-default-features --features "$features"
done
cargo check --quiet -p xoq --no-default-features
cargo check --quiet -p xoq-client --no-default-features
cargo check --quiet -p xoq-server --no-default-features
# A serial-only user must not get the relay server or the C codec.
if cargo tree -e normal -p xoq --no-default-features --features serial --prefix none \
    | grep -qE '^(moq-relay|openh264|axum|clap) '; then
    echo "a serial-only build pulls in a relay server, a C codec or the CLI" >&2; exit 1
fi
# Audio is pure Rust (libopus translated): it must not pull in OpenH264 or the relay server.
if cargo tree -e normal -p xoq --no-default-features --features audio --prefix none \
    | grep -qE '^(moq-relay|openh264|axum|clap) '; then
    echo "an audio-only build pulls in a relay server, a C codec or the CLI" >&2; exit 1
fi

log "rust tests"
cargo test --workspace --quiet 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"

log "link-fault tests (loss, delay, partitions, rebinding, restarts)"
# Ignored by default because they need root and nftables (a private network namespace each);
# here they must run, and a missing tool fails them.
if [ "$(id -u)" = 0 ]; then
    cargo test --quiet -p xoq-netsim --test netns -- --ignored
    cargo test --quiet -p xoq --test bad_links -- --ignored
else
    echo "skipped: the link-fault tests need root (network namespaces, nftables)" >&2
fi

log "real audio devices (cpal against a PulseAudio null sink)"
# The audio-device feature needs ALSA's headers to build and a sound server to run; neither is
# needed by the default build. PulseAudio runs as any user here, with its own runtime dir.
if ! dpkg -s libasound2-dev pulseaudio libasound2-plugins >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            libasound2-dev pulseaudio libasound2-plugins
    fi
fi
if dpkg -s libasound2-dev pulseaudio libasound2-plugins >/dev/null 2>&1; then
    cargo check --quiet -p xoq --features audio-device
    cargo test --quiet -p xoq-device --features audio-device --test pulse -- --ignored
else
    echo "skipped: the cpal backend test needs libasound2-dev, pulseaudio and libasound2-plugins (installing them needs root)" >&2
fi

log "python package and tests"
# A virtualenv outside the clone, like the target dir, so CI can cache it.
VENV="${XOQ_VENV:-$HOME/.cache/xoq/venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || {
        apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$VENV"
    }
fi
if [ "$(uname -m)" = x86_64 ] && ! dpkg -s libusb-1.0-0 >/dev/null 2>&1 && command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq libusb-1.0-0; fi  # pyrealsense2 (test_realsense.py) loads it
"$VENV/bin/pip" install -q --disable-pip-version-check -r python/requirements-test.txt
# maturin develop builds with the dev profile into the target dir `cargo build` just filled:
# only the extension crate itself compiles here.
(export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"; maturin develop --quiet)
# pyserial's and python-can's own test suites, from their pinned sdists, run against xoq.
export XOQ_UPSTREAM="${XOQ_UPSTREAM:-$HOME/.cache/xoq/upstream}"
XOQ_VENV="$VENV" scripts/fetch_upstream_suites.sh >/dev/null
XOQ_BIN="$CARGO_TARGET_DIR/debug/xoq" "$VENV/bin/python" -m pytest -q python/tests

log "javascript package, web pages and browser tests"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
fi
export CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$CHROMIUM" ]; then
    # Debian's Chromium: test tools cannot download their own browser on this network.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    CHROMIUM=/usr/bin/chromium
fi
(cd js && npm ci --no-audit --no-fund --loglevel=error)
(cd js && XOQ_BIN="$CARGO_TARGET_DIR/debug/xoq" npm test)
# The binary embeds crates/xoq/web; it must be exactly what the page sources build.
(cd js && npm run --silent pages)
if [ -n "$(git status --porcelain -- crates/xoq/web)" ]; then
    git status --short -- crates/xoq/web >&2
    echo "crates/xoq/web is stale: run 'npm run pages' in js/ and commit the result" >&2
    exit 1
fi
(cd js && XOQ_BIN="$CARGO_TARGET_DIR/debug/xoq" XOQ_ARTIFACTS="$ROOT/artifacts/browser" npm run --silent e2e)

log "demo self-check"
cargo run --quiet --bin xoq -- demo --check --listen 127.0.0.1:0

log "runnable examples"
cargo run --quiet -p xoq --example serial_sim
cargo run --quiet -p xoq --example can_motor
cargo run --quiet -p xoq --example camera_view

log "camera command line"
XOQ="$CARGO_TARGET_DIR/debug/xoq"
"$XOQ" camera-server --list
CAM_OUT="$(mktemp -d)"
"$XOQ" camera-server sim:pattern --width 320 --height 240 > "$CAM_OUT/banner" 2>/dev/null &
CAM_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$CAM_OUT/banner" && break; sleep 0.1; done
CAM_ADDR="$(grep -m1 '^address: .*@' "$CAM_OUT/banner" | cut -d' ' -f2)"
"$XOQ" camera-client "$CAM_ADDR" --frames 30 --save "$CAM_OUT/out.h264"
"$XOQ" camera-client "$CAM_ADDR" --frames 5 --save "$CAM_OUT/frames"
kill "$CAM_PID"
test -s "$CAM_OUT/out.h264" && ls "$CAM_OUT/frames" | grep -q '\.jpg$'
rm -rf "$CAM_OUT"

log "depth command line"
DEPTH_OUT="$(mktemp -d)"
"$XOQ" depth-server sim:depth --width 320 --height 240 > "$DEPTH_OUT/banner" 2>/dev/null &
DEPTH_PID=$!
for _ in $(seq 100); do grep -q '^ready' "$DEPTH_OUT/banner" && break; sleep 0.1; done
DEPTH_ADDR="$(grep -m1 '^address: .*@' "$DEPTH_OUT/banner" | cut -d' ' -f2)"
"$XOQ" depth-client "$DEPTH_ADDR" --frames 10 | tee "$DEPTH_OUT/frames"
kill "$DEPTH_PID"
grep -Eq 'centre (0\.98|0\.99|1\.00|1\.01)[0-9] m' "$DEPTH_OUT/frames"  # 1 m ± the scene's 14 mm at 320 wide
rm -rf "$DEPTH_OUT"

log "benchmark smoke run (figures printed, never pass/fail on timing)"
cargo run --quiet --bin xoq -- bench serial --count 300 --bulk 1048576
cargo run --quiet --bin xoq -- bench can --count 300 --frames 5000 --seconds 0.5
cargo run --quiet --bin xoq -- bench python --count 300 --python "$VENV/bin/python"
cargo run --quiet --bin xoq -- bench camera --sizes 320x240 --seconds 0.5
cargo run --quiet --bin xoq -- bench audio --seconds 1
cargo run --quiet --bin xoq -- bench record --seconds 3 --hz 200
cargo run --quiet --bin xoq -- bench depth --sizes 320x240 --seconds 0.5 --python "$VENV/bin/python"
cargo run --quiet --bin xoq -- bench connect --count 10 --python "$VENV/bin/python"
# Impaired links run in a private network namespace (root); about a minute together.
if [ "$(id -u)" = 0 ]; then
    cargo run --quiet --bin xoq -- bench link --rtts 0,50 --losses 0,1 --outages 2 --repeats 1 --count 50 \
        --camera-sizes 320x240 --camera-seconds 1
    cargo run --quiet --bin xoq -- bench clock --seconds 3
else
    echo "skipped: bench link and bench clock need root (network namespaces, nftables)" >&2
fi

log "all tests passed"
