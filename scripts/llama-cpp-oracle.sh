#!/usr/bin/env bash
# Builds llama.cpp's reference code, the oracle quantd's ggml tests compare against, from the
# llama.cpp vendored in the PyPI sdist of llama-cpp-python (pinned version and sha256), and
# prints the cache directory that holds it on the last line of stdout (everything else goes to
# stderr).
#
#   scripts/llama-cpp-oracle.sh [TARGET...]     default: ggml-base ggml-oracle
#
# Targets: any CMake target of llama.cpp (built in <cache>/build, outputs in <cache>/build/bin;
# `ggml-base` is libggml-base.so, the quantizers), and `ggml-oracle` (<cache>/bin/ggml-oracle,
# the file-level harness of scripts/llama-cpp-oracle/ggml_oracle.c over libggml-base). To
# build more of llama.cpp (tools, the full library), pass their targets, and extend
# CMAKE_OPTIONS if they need switching on.
#
# Cache: ${QUANTD_CI_CACHE:-~/.cache/quantd-ci}/llama.cpp/<version>/, outside the clone so CI's
# fresh clones reuse it. Each step leaves a marker (in <cache>/done/) only once it completed,
# recording its inputs, so an interrupted or outdated step is redone; concurrent runs (test
# processes, CI jobs) serialise on a flock(1) lock beside the cache directory.
#
# Needs curl, python3 (the PyPI JSON and, when cmake is missing, a venv with pip's cmake),
# tar, make and a C/C++ compiler.
set -euo pipefail

VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PYPI_JSON_URL=${QUANTD_PYPI_JSON_URL:-https://pypi.org/pypi/llama-cpp-python/json}
# cmake from PyPI when none is installed (llama.cpp needs >= 3.14).
CMAKE_PIP_REQUIREMENT="cmake==3.31.6"

# The reference build: plain Release, baseline ISA (no -march=native: no FMA contraction on
# x86_64, see src/quant/ggml/kquants.rs), shared libraries, nothing optional.
CMAKE_OPTIONS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=OFF
    -DBUILD_SHARED_LIBS=ON
)

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_SOURCE="$SCRIPT_DIR/llama-cpp-oracle/ggml_oracle.c"
CACHE_ROOT=${QUANTD_CI_CACHE:-$HOME/.cache/quantd-ci}
CACHE="$CACHE_ROOT/llama.cpp/$VERSION"
SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
SOURCE="$CACHE/src"
LLAMA_CPP="$SOURCE/vendor/llama.cpp"
BUILD="$CACHE/build"
DONE="$CACHE/done"

log() { echo "llama-cpp-oracle: $*" >&2; }
die() { log "$*"; exit 1; }

# Runs a command with its output in a log file, shown only when it fails.
run_logged() {
    local logfile=$1
    shift
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 50 "$logfile" >&2
        die "failed: $* (log: $logfile)"
    fi
}

# is_done STEP INPUTS: whether STEP completed with these inputs. mark_done records it.
is_done() { [[ -f "$DONE/$1" && "$(cat "$DONE/$1")" == "$2" ]]; }
mark_done() { mkdir -p "$DONE" && printf '%s' "$2" >"$DONE/$1.tmp" && mv "$DONE/$1.tmp" "$DONE/$1"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The sdist's URL from PyPI's JSON API (PyPI may answer with a URL relative to the API's).
sdist_url() {
    curl -fsSL --retry 3 "$PYPI_JSON_URL" | python3 -c '
import json, sys, urllib.parse
version, sha256, base = sys.argv[1:4]
files = json.load(sys.stdin)["releases"].get(version, [])
urls = [f["url"] for f in files if f["packagetype"] == "sdist" and f["digests"]["sha256"] == sha256]
if not urls:
    sys.exit(f"no sdist of llama-cpp-python {version} with sha256 {sha256} on PyPI")
print(urllib.parse.urljoin(base, urls[0]))
' "$VERSION" "$SDIST_SHA256" "$PYPI_JSON_URL"
}

fetch_source() {
    is_done source "$SDIST_SHA256" && return
    if [[ ! -f "$SDIST" || "$(sha256_of "$SDIST")" != "$SDIST_SHA256" ]]; then
        local url
        url=$(sdist_url)
        log "downloading $url"
        curl -fsSL --retry 3 -o "$SDIST.part" "$url"
        [[ "$(sha256_of "$SDIST.part")" == "$SDIST_SHA256" ]] ||
            die "sha256 mismatch for $url (expected $SDIST_SHA256)"
        mv "$SDIST.part" "$SDIST"
    fi
    rm -rf "$SOURCE" "$SOURCE.part" "$BUILD" "$DONE"
    mkdir -p "$SOURCE.part"
    tar -xzf "$SDIST" -C "$SOURCE.part" --strip-components=1
    mv "$SOURCE.part" "$SOURCE"
    mark_done source "$SDIST_SHA256"
}

# Puts a cmake on PATH: the system's, else one from PyPI in a venv of the cache.
ensure_cmake() {
    command -v cmake >/dev/null && return
    local venv="$CACHE_ROOT/venvs/cmake"
    if ! is_done cmake-venv "$CMAKE_PIP_REQUIREMENT"; then
        log "installing $CMAKE_PIP_REQUIREMENT into $venv"
        rm -rf "$venv"
        run_logged "$CACHE/cmake-venv.log" python3 -m venv "$venv"
        run_logged "$CACHE/cmake-venv.log" "$venv/bin/pip" install --quiet \
            --disable-pip-version-check "$CMAKE_PIP_REQUIREMENT"
        mark_done cmake-venv "$CMAKE_PIP_REQUIREMENT"
    fi
    PATH="$venv/bin:$PATH"
}

configure() {
    local inputs="${CMAKE_OPTIONS[*]}"
    is_done configure "$inputs" && return
    ensure_cmake
    rm -rf "$BUILD"
    log "configuring llama.cpp $VERSION"
    run_logged "$CACHE/configure.log" cmake -S "$LLAMA_CPP" -B "$BUILD" "${CMAKE_OPTIONS[@]}"
    mark_done configure "$inputs"
}

build_cmake_target() {
    local target=$1 inputs="${CMAKE_OPTIONS[*]}"
    is_done "target-$target" "$inputs" && return
    configure
    ensure_cmake
    log "building $target"
    run_logged "$CACHE/build-$target.log" cmake --build "$BUILD" --target "$target" -j "$(nproc)"
    mark_done "target-$target" "$inputs"
}

build_harness() {
    local inputs
    inputs=$(sha256_of "$HARNESS_SOURCE")
    is_done harness "$inputs" && return
    build_cmake_target ggml-base
    log "compiling ggml-oracle"
    mkdir -p "$CACHE/bin"
    run_logged "$CACHE/harness.log" "${CC:-cc}" -O2 -std=c11 -Wall -Wextra \
        -I "$LLAMA_CPP/ggml/include" "$HARNESS_SOURCE" \
        -L "$BUILD/bin" -lggml-base -Wl,-rpath,"$BUILD/bin" -o "$CACHE/bin/ggml-oracle.part"
    mv "$CACHE/bin/ggml-oracle.part" "$CACHE/bin/ggml-oracle"
    mark_done harness "$inputs"
}

main() {
    local targets=("$@")
    [[ ${#targets[@]} -gt 0 ]] || targets=(ggml-base ggml-oracle)
    mkdir -p "$CACHE"
    exec 9>"$CACHE.lock"
    flock 9
    fetch_source
    for target in "${targets[@]}"; do
        case $target in
            ggml-oracle) build_harness ;;
            *) build_cmake_target "$target" ;;
        esac
    done
    echo "$CACHE"
}

main "$@"
