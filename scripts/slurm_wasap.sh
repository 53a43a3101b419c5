#!/usr/bin/env bash
# WASAP-SGD in the paper's Table 3 setting on one node: 1 parameter server +
# 5 workers (6 MPI ranks), Higgs, All-ReLU + Importance Pruning, 500 epochs.
#
#   sbatch scripts/slurm_wasap.sh                      # Higgs, WASAP, 5 workers
#   MODE=wassp DATASET=fashionmnist sbatch scripts/slurm_wasap.sh
#   EXTRA="--epochs 50" sbatch scripts/slurm_wasap.sh
#
# Preemption and time limits: SLURM sends SIGUSR1 five minutes before the
# limit (--signal) and SIGTERM on preemption / scancel.  Every rank turns
# either into a stop request; rank 0 checkpoints (checkpoints are written by
# rank 0 only) and every rank exits with status 75; this script then
# requeues the job, and the requeued job continues from the newest
# checkpoint (--resume auto, same --out, same number of ranks).
#
# MPI: with LAUNCH=srun (default) mpi4py must be built against the site MPI
# that srun's PMI serves (see README "Parallel training"):
#     module load openmpi    # or the site's MPICH / Intel MPI
#     MPICC=$(which mpicc) pip install --no-binary=mpi4py --no-cache-dir mpi4py
# With LAUNCH=mpiexec, the `mpich` + `mpi4py` wheels from PyPI (`make mpi`)
# work on a single node without any site MPI.
#
#SBATCH --job-name=wasap
#SBATCH --nodes=1
#SBATCH --ntasks=6                 # 1 parameter server + 5 workers
#SBATCH --cpus-per-task=2          # threads per rank: cores of the node / 6 (adjust)
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@300        # SIGUSR1 to this script 5 minutes before the limit
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=wasap-%x-%j.out

set -uo pipefail

MODE=${MODE:-wasap}                       # wasap | wassp
DATASET=${DATASET:-higgs}
LAUNCH=${LAUNCH:-srun}                    # srun (site MPI) | mpiexec (pip's mpich)
SRUN_MPI=${SRUN_MPI:-pmix}                # srun --mpi=... (pmix, pmi2: what the site MPI uses)
OUT=${OUT:-runs/${DATASET}_${MODE}_x5_${SLURM_JOB_ID:-local}}   # the same across requeues
THREADS=${SLURM_CPUS_PER_TASK:-1}
NTASKS=${SLURM_NTASKS:-6}
EXTRA=${EXTRA:-}
PYTHON=${PYTHON:-python3}                 # the interpreter that has sparse_mlp installed

cd "${SLURM_SUBMIT_DIR:-.}"
export OMP_NUM_THREADS="$THREADS" OMP_PROC_BIND=close OMP_PLACES=cores
export PYTHONUNBUFFERED=1

# one command line serves the first start and every requeue
# shellcheck disable=SC2206
ARGS=(run_experiment.py --dataset "$DATASET" --parallel "$MODE" --importance-pruning
      --threads "$THREADS" --checkpoint-every 10 --no-progress
      --out "$OUT" --resume auto $EXTRA)

if [ "$LAUNCH" = srun ]; then
    # --kill-on-bad-exit: a rank that dies takes the job step down at once
    srun --kill-on-bad-exit=1 --cpu-bind=cores --mpi="$SRUN_MPI" "$PYTHON" "${ARGS[@]}" &
else
    # -bind-to core:T gives each rank its own T cores (the ranks then wait by spinning)
    mpiexec -n "$NTASKS" -bind-to "core:$THREADS" "$PYTHON" "${ARGS[@]}" &
fi
LAUNCHER=$!

forward() {
    echo "$(date +%T) $1 received: asking every rank to checkpoint and stop"
    kill -USR1 "$LAUNCHER" 2>/dev/null   # srun and mpiexec forward it to every rank
}
trap 'forward SIGUSR1' USR1
trap 'forward SIGTERM' TERM

# `wait` returns early when a trapped signal arrives: wait until the launcher is gone
while :; do
    wait "$LAUNCHER"
    rc=$?
    kill -0 "$LAUNCHER" 2>/dev/null || break
done

if [ "$rc" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "$(date +%T) preempted with a checkpoint in $OUT: requeueing"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
