#!/usr/bin/env bash
# The demo results of docs/results.md: the four demo configs (vanilla, NLI coreset, random at
# the same budget, NLI-related) over seeds 0,1,2 on 2 CPU cores, then `coretune table` and the
# table in docs/results.md.
#   bash scripts/results.sh [extra `coretune run` options, e.g. --full-eval]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
runs=${CORETUNE_RESULTS_DIR:-runs/results}
# Stage times come from the runs' manifests (scripts/readme_results.py puts them in docs/results.md).
for cfg in vanilla coreset random related; do
  .venv/bin/coretune run "configs/demo/$cfg.yaml" --seeds 0,1,2 --runs-dir "$runs" --quiet "$@"
done
.venv/bin/coretune table "$runs" -o "$runs" --title "coretune results (3 seeds, CPU)"
.venv/bin/python scripts/readme_results.py "$runs"
