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
# srun without a matching MPI plugin: a task of a 2-task step, without PMIx's variables
out=$(env -u PMIX_RANK -u OMPI_COMM_WORLD_SIZE SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 "$LADLE" keys 2>&1) &&
    fail "a task of a 2-task srun step without PMIx was accepted"
echo "$out" | grep -q "one of 2 tasks.*--mpi=pmix" || fail "no launcher explanation: $out"
passed=$((passed + 1))
# the same variables under Open MPI's own launcher (mpiexec inside an allocation) are fine
(export SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2; run_mpi 2 "| \`model.dim\`" "$LADLE" keys) ||
    fail "mpiexec inside a 2-task step was refused"
passed=$((passed + 1))
echo "launcher: $passed passed, 0 failed"
