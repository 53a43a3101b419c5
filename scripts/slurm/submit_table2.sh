#!/bin/bash
# Submit Table 2 (and 6) of one dataset: the (row, seed) array, then the
# collect job once every task has ended.
#   scripts/slurm/submit_table2.sh higgs [SEEDS] [EPOCHS]
set -eu
DATASET=${1:?usage: submit_table2.sh DATASET [SEEDS] [EPOCHS]}
SEEDS=${2:-5}
EPOCHS=${3:-500}
N=$((6 * SEEDS - 1))
export DATASET SEEDS EPOCHS
ARRAY=$(sbatch --parsable --array=0-$N scripts/slurm/table2_array.sbatch)
sbatch --dependency=afterany:"$ARRAY" scripts/slurm/table2_collect.sbatch
