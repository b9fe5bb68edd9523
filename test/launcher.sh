#!/bin/sh
# The launcher guard itself: a launcher that runs nothing and exits 0 must fail the
# test helper, and so must Open MPI refusing to run as root without permission.
. "$top_srcdir/test/lib.sh"
make_tmp
passed=0
if (TESTMPIRUN="true"; run_mpi 2 "test_shard (ranks=2)" "$top_builddir/test/test_shard") 2>/dev/null; then
    fail "run_mpi accepted a launcher that ran nothing"
fi
passed=$((passed + 1))
if [ "$(id -u)" = 0 ]; then
    # Open MPI as root without OMPI_ALLOW_RUN_AS_ROOT refuses, yet exits 0
    if (unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM; TESTMPIRUN="mpiexec -n";
        run_mpi 2 "test_shard (ranks=2)" "$top_builddir/test/test_shard") 2>/dev/null; then
        fail "run_mpi accepted mpiexec refusing to run as root"
    fi
    passed=$((passed + 1))
fi
# srun without a matching MPI plugin: each task is a one-rank world inside a step of 2
out=$(SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 "$LADLE" keys 2>&1) && fail "a one-rank world in a 2-task srun step was accepted"
echo "$out" | grep -q "srun started 2 tasks.*--mpi=pmix" || fail "no launcher explanation: $out"
passed=$((passed + 1))
# a step of as many tasks as the world has ranks is fine
SLURM_STEP_NUM_TASKS=1 SLURM_NTASKS=2 "$LADLE" keys > /dev/null || fail "a matching srun step was refused"
passed=$((passed + 1))
echo "launcher: $passed passed, 0 failed"
