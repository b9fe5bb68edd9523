#!/bin/sh
# A full file system during a checkpoint, at 1 and 2 ranks: the run exits 1 with one
# message (no signal, no abort), leaves no half-written file, keeps the previous checkpoint
# and 'latest', and once there is room again resumes to the same losses as an uninterrupted
# run. And checkpoints are durable before they get their name: every rank syncs the file
# (MPI_File_sync through H5Fflush) and rank 0 syncs it again after closing, before the rename.
# Needs root's 'mount -t tmpfs' for a small file system: without it the test is skipped (77).
. "$top_srcdir/test/lib.sh"
make_tmp
passed=0
mkdir -p "$TMP/fs"
if ! mount -t tmpfs -o size=3m tmpfs "$TMP/fs" 2>"$TMP/mount.err"; then
    echo "SKIP: cannot mount a tmpfs here ($(cat "$TMP/mount.err")): the full-disk test needs root's mount"
    exit 77
fi
trap 'umount "$TMP/fs" 2>/dev/null; rm -rf "$TMP"' EXIT
make_small_corpus "$TMP/corpus.h5"
# shellcheck disable=SC2086
set -- $TINY train.steps=8 ckpt.every=2 ckpt.keep_last=1 data.corpus="$TMP/corpus.h5"

for n in 1 2; do
    rm -rf "${TMP:?}/fs/"*
    run_mpi $n "^done: 8 steps" "$LADLE" train "$@" run.dir="$TMP/ref$n" || fail "reference run on $n ranks"
    step_losses "$TMP/ref$n" > "$TMP/ref$n.loss"
    R="$TMP/fs/run"
    run_mpi $n "stopping after 4 steps" "$LADLE" train "$@" run.stop_after=4 run.dir="$R" || fail "first 4 steps"
    # leave less room than one more checkpoint (a checkpoint here is about 0.45 MB)
    avail=$(df -k --output=avail "$TMP/fs" | tail -1)
    dd if=/dev/zero of="$TMP/fs/filler" bs=1k count=$((avail - 200)) 2>/dev/null
    run_mpi $n "^step" "$LADLE" train "$@" run.dir="$R"
    rc=$?
    [ $rc -eq 1 ] || { cat "$TMP/out" >&2; fail "$n ranks, full disk: exit $rc, expected 1"; }
    grep -q "ladle: error: no room to write '$R/ckpt-00000006.h5'" "$TMP/out" || { cat "$TMP/out" >&2;
        fail "$n ranks, full disk: no message naming the checkpoint"; }
    [ "$(grep -c '^ladle: error' "$TMP/out")" -eq 1 ] || { cat "$TMP/out" >&2; fail "$n ranks: not one message"; }
    if grep -qi "signal\|segmentation\|MPI_ABORT" "$TMP/out"; then cat "$TMP/out" >&2; fail "$n ranks: crashed or aborted"; fi
    ls "$R" | grep -q '\.tmp$' && fail "$n ranks: a .tmp file was left in the run directory: $(ls "$R")"
    [ "$(cat "$R/latest")" = "ckpt-00000004.h5" ] || fail "$n ranks: latest is '$(cat "$R/latest")'"
    "$LADLE" inspect "$R/ckpt-00000004.h5" > /dev/null || fail "$n ranks: the step-4 checkpoint is damaged"
    passed=$((passed + 1))
    rm -f "$TMP/fs/filler"
    run_mpi $n "^done: 8 steps" "$LADLE" train "$@" run.dir="$R" || { cat "$TMP/out" >&2; fail "$n ranks: resume"; }
    grep -q "resuming from $R/ckpt-00000004.h5 at step 4" "$TMP/out" || fail "$n ranks: did not resume from step 4"
    step_losses "$R" > "$TMP/fs$n.loss"
    same_losses "$n ranks, interrupted by a full disk vs not" "$TMP/ref$n.loss" "$TMP/fs$n.loss" 8 ||
        fail "$n ranks: losses after the full-disk resume differ"
    passed=$((passed + 1))
done

# Given back once written: the space reserved past the end (rank 0 reserves an upper bound
# before writing; ext4 keeps blocks reserved past the end of a file unless it is truncated).
# stat's blocks against the size, on the test's own file system (tmpfs would free them anyway).
check_trimmed() {
    set -- $(stat -c '%b %B %s' "$1") "$1"
    [ $(($1 * $2)) -le $(($3 + 16384)) ] || fail "'$4' holds $(($1 * $2)) bytes of blocks for $3 bytes of data"
}
check_trimmed "$TMP/ref2/ckpt-00000008.h5"
"$LADLE" prep -o "$TMP/room.h5" --clusters 16 --split-doc-bytes 4096 --max-domain-bytes 1000000 \
    --domain c=/usr/include > "$TMP/out" 2>&1 || { cat "$TMP/out" >&2; fail "ladle prep with room"; }
grep -q "warning" "$TMP/out" && { cat "$TMP/out" >&2; fail "ladle prep wrote more than it reserved"; }
check_trimmed "$TMP/room.h5"
passed=$((passed + 1))

# ladle prep onto a file system without room for its output: exit 1 with one message before
# any data is written, no output and no .tmp left (they would hold the disk: tens of GB).
for n in 1 2; do
    rm -rf "${TMP:?}/fs/"*
    run_mpi $n "no room to write" "$LADLE" prep -o "$TMP/fs/corpus.h5" --clusters 4 --split-doc-bytes 4096 \
        --max-domain-bytes 2000000 --domain c=/usr/include --domain man=/usr/share/man/man7
    rc=$?
    [ $rc -eq 1 ] || { cat "$TMP/out" >&2; fail "prep on $n ranks, full disk: exit $rc, expected 1"; }
    grep -q "^ladle: error: no room to write '$TMP/fs/corpus.h5': it needs up to .* MiB and the file system has .* MiB free; nothing was written" "$TMP/out" ||
        { cat "$TMP/out" >&2; fail "prep on $n ranks, full disk: no message naming the output and the space"; }
    [ "$(grep -c '^ladle: error' "$TMP/out")" -eq 1 ] || { cat "$TMP/out" >&2; fail "prep on $n ranks: not one message"; }
    if grep -qi "signal\|segmentation\|MPI_ABORT" "$TMP/out"; then cat "$TMP/out" >&2; fail "prep on $n ranks: aborted"; fi
    [ -z "$(ls "$TMP/fs")" ] || fail "prep on $n ranks, full disk: left $(ls "$TMP/fs")"
    passed=$((passed + 1))
done

# durability: per rank, the checkpoint is fsync'd before rank 0 renames it
if command -v strace > /dev/null; then
    rm -rf "$TMP/st"
    # shellcheck disable=SC2086
    timeout 300 $TESTMPIRUN 2 strace -f -y -e trace=fsync,fdatasync,rename -ff -o "$TMP/trace" \
        "$LADLE" train $TINY train.steps=2 ckpt.every=2 data.corpus="$TMP/corpus.h5" run.dir="$TMP/st" \
        > "$TMP/out" 2>&1 || { cat "$TMP/out" >&2; fail "training under strace"; }
    synced=0
    for f in "$TMP"/trace.*; do
        # this process's calls on the checkpoint, in order: fsyncs, then (rank 0) the rename
        grep "ckpt-00000002.h5.tmp" "$f" > "$TMP/calls" || continue
        grep -q "^fsync(.*ckpt-00000002.h5.tmp>) = 0" "$TMP/calls" && synced=$((synced + 1))
        if grep -q "^rename(" "$TMP/calls"; then
            awk '/^rename\(/ { exit !seen } /^fsync\(/ { seen++ }' "$TMP/calls" ||
                fail "rank 0 renamed the checkpoint before syncing it: $(cat "$TMP/calls")"
            [ "$(grep -c '^fsync(' "$TMP/calls")" -ge 2 ] || fail "rank 0 did not sync after closing: $(cat "$TMP/calls")"
        fi
    done
    [ $synced -eq 2 ] || fail "$synced of 2 ranks synced the checkpoint"
    passed=$((passed + 1))
else
    fail "strace is not installed (share/ladle/debian-packages.sh installs it)"
fi
echo "disk_full: $passed checks passed"
