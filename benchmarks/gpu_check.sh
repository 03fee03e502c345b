#!/usr/bin/env bash
# The prepared GPU check (issue 30): one command for a short session on a GPU machine, one table at the end.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, with the network: the packages the GPU machine lacks,
#                                                 # as Python 3.12 x86-64 wheels, into .gpu-wheels/ (git ignores it)
#   bash benchmarks/gpu_check.sh                  # there, from the repository's root, with .gpu-wheels carried
#   DEV=cpu GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # the dry run of its plumbing (tests/test_gpu_check.py)
#
# With the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=600).
# GPU_CHECK_BUDGET (seconds, default 510, counted from here): no step starts when less time is left than it
# takes, and a running one is stopped at the time left, so the table comes back inside 9 minutes. PYTHON picks
# the interpreter (default python3, the one that holds PyTorch there). benchmarks/gpu_check.py says what each
# step measures.
set -u
cd "$(dirname "$0")/.."
export GPU_CHECK_START="${GPU_CHECK_START:-$(date +%s)}"
PYTHON="${PYTHON:-python3}"
WHEELS=.gpu-wheels
# What the GPU machine's image lacks of unet-sep's dependencies and the tests' (the versions this project's CI
# venv holds); torch, numpy, typer, safetensors, tqdm, scipy and pytest are there. PyAV (36 MB) only with --with-av:
# the check reads WAV files only.
PACKAGES="soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 platformdirs==4.14.9 google-crc32c==1.9.0
norbert==0.2.1"

if [ "${1:-}" = "--fetch-wheels" ]; then
    [ "${2:-}" = "--with-av" ] && PACKAGES="$PACKAGES av==18.1.0"
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086  # one argument per package
    exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" $PACKAGES
fi

# Install the carried wheels only where something is missing (a machine set up for unet-sep has them all).
if ! "$PYTHON" -c "import soundfile, soxr, platformdirs, google_crc32c, norbert" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        SITE="$(mktemp -d /tmp/gpu-check-site.XXXXXX)"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
            || { echo "gpu_check: installing the wheels of $WHEELS failed" >&2; exit 1; }
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: packages are missing and $WHEELS/ has no wheels (bash $0 --fetch-wheels, then carry it)" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
