#!/usr/bin/env bash
# Set up (if needed) and run the demo: the whole pipeline on the shipped data, 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
runs=${CORETUNE_DEMO_DIR:-runs/demo}
start=$(date +%s)
# The pool the three configs build (configs/demo/_base.yaml: the full BIG-bench rows and RTE/CB
# through their first two templates, a seeded 5,000-row sample), built once here to show it.
.venv/bin/coretune pool build --bigbench full --templates first:2 --max-rows 5000 \
  -o "$runs/pool.parquet" --overwrite
.venv/bin/coretune pool info "$runs/pool.parquet" --top 5
for cfg in vanilla coreset random; do
  .venv/bin/coretune run "configs/demo/$cfg.yaml" --runs-dir "$runs" "$@"
done
.venv/bin/coretune table "$runs" -o "$runs" --title "coretune demo"
echo "demo finished in $(( $(date +%s) - start ))s; report: $runs/report.html"
