#!/usr/bin/env bash
# Submits the N-shard array and a merge that starts when every shard has succeeded (afterok).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
mkdir -p logs
array=$(sbatch --parsable eval-shards.sbatch)
merge=$(sbatch --parsable --dependency=afterok:"$array" merge.sbatch)
echo "shards: job $array; merge: job $merge (runs after all shards succeed)"
