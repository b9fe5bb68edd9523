#!/bin/sh
# bench_ckpt.sh: ladle's checkpoint write/read speed against dd on the same file system, in
# one run (`make bench` runs it after bench.sh).
#
# In one temporary directory (under $BENCH_CKPT_DIR, default ${TMPDIR:-/tmp}):
#   - dd with bs=4M of the checkpoint's payload size (the floats ladle writes):
#       write, buffered, no fsync              (the page cache alone, for reference)
#       write, buffered, conv=fsync            (like-for-like: ladle_ckpt_save is durable)
#       write, oflag=direct                    (if supported)
#       read, right after the fsync'd write    (from the page cache)
#       read, iflag=direct                     (if supported: the device, no page cache)
#       read, cold: each after `dd iflag=nocache count=0` dropped the file's pages
#     All best of $REPS; each write after removing the previous file, as bench_ckpt does
#     (on a VM, page-cache pages the guest never touched before fill several times slower
#     than reused ones, so both sides are measured in the same state).
#   - bench_ckpt (ladle_ckpt_save with /optim, ladle_ckpt_restore, best of $REPS; verified
#     by checksum) on 1 rank and on 2 ranks;
# and prints a table: MB/s (1e6 bytes/s, over the payload bytes) and ladle / dd for the
# like-for-like pairs, against the 70 % target. Nothing drops the system page cache:
# "cached" reads are memory copies; the "cold" ones only miss the guest's cache (a VM's
# host may still cache the disk).
#
# Environment: BENCH_CKPT_BIN (bench_ckpt; default ./test/bench/bench_ckpt), MPIEXEC,
# BENCH_CKPT_DIR, BENCH_CKPT_ARGS (extra bench_ckpt arguments, e.g. "layers=8 dim=512
# experts=1"), BENCH_CKPT_REPS (3). Exit status non-zero if anything fails, including an
# mpiexec that refuses to run or exits 0 without output. Takes well under a minute for
# the default ~440 MB checkpoint.
set -eu

me=bench_ckpt.sh
BENCH_CKPT_BIN=${BENCH_CKPT_BIN:-./test/bench/bench_ckpt}
MPIEXEC=${MPIEXEC:-mpiexec}
PARENT=${BENCH_CKPT_DIR:-${TMPDIR:-/tmp}}
ARGS=${BENCH_CKPT_ARGS:-}
REPS=${BENCH_CKPT_REPS:-3}
TARGET=70

die() { echo "$me: error: $*" >&2; exit 1; }
LC_ALL=C                       # dd's summary line is parsed
export LC_ALL

[ -x "$BENCH_CKPT_BIN" ] || die "bench_ckpt binary '$BENCH_CKPT_BIN' not found (make test/bench/bench_ckpt)"
command -v "$MPIEXEC" >/dev/null 2>&1 || die "mpiexec '$MPIEXEC' not found"
command -v dd >/dev/null 2>&1 || die "dd not found"
case $REPS in ''|*[!0-9]*|0) die "BENCH_CKPT_REPS must be a positive integer" ;; esac
[ -d "$PARENT" ] || die "'$PARENT' is not a directory (BENCH_CKPT_DIR / TMPDIR)"
if [ "$(id -u)" = 0 ]; then
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
fi

tmp=$(mktemp -d "$PARENT/ladle-bench-ckpt.XXXXXX") || die "cannot create a directory in '$PARENT'"
out=$tmp/out
mkdir "$out"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
data=$tmp/data                 # what is measured: dd's file and the checkpoints
mkdir "$data"
start=$(date +%s)

# value KEY FILE WHAT: the number after "KEY " on its line of FILE (fails if absent)
value() {
    v=$(awk -v k="$1" '$1 == k { print $2; found = 1 } END { exit !found }' "$2") ||
        die "no '$1' in the output of $3 (see above)"
    echo "$v"
}

# the payload size, from bench_ckpt itself (also checks that mpiexec runs it)
# shellcheck disable=SC2086
"$MPIEXEC" -n 1 "$BENCH_CKPT_BIN" "$data" $ARGS dry=1 >"$out/size" 2>&1 ||
    { cat "$out/size"; die "bench_ckpt dry=1 failed (did $MPIEXEC refuse to run?)"; }
payload=$(value payload_bytes "$out/size" "bench_ckpt dry=1")
count=$(( (payload + 4194303) / 4194304 ))       # 4 MiB blocks, rounded up
bytes=$((count * 4194304))
echo "== $me: payload $payload bytes; dd: $count x 4 MiB = $bytes bytes in $data"
df -hT "$data" | tail -1 | awk '{ printf "   file system: %s (%s) on %s\n", $7, $2, $1 }'

# dd_secs ARGS...: run dd, print its elapsed seconds (from its summary line); fails on error
dd_secs() {
    dd "$@" 2>"$out/dd.err" || { cat "$out/dd.err" >&2; return 1; }
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) { print $(i - 1); found = 1 } }
         END { exit !found }' "$out/dd.err" || { cat "$out/dd.err" >&2; return 1; }
}
# best SECS...: the smallest
best() { printf '%s\n' "$@" | sort -g | head -1; }

f=$data/dd.bin
# dd_write NAME FLAGS...: best of REPS writes, each of a fresh file (the previous one removed)
dd_write() {
    name=$1; shift
    ts='' i=0
    while [ "$i" -lt "$REPS" ]; do
        rm -f "$f"
        t=$(dd_secs if=/dev/zero of="$f" bs=4M count="$count" "$@") || return 1
        ts="$ts $t" i=$((i + 1))
    done
    # shellcheck disable=SC2086
    best $ts >"$out/$name"
}
# dd_read NAME FLAGS...: best of REPS reads of the existing file
dd_read() {
    name=$1; shift
    ts='' i=0
    while [ "$i" -lt "$REPS" ]; do
        t=$(dd_secs if="$f" of=/dev/null bs=4M "$@") || return 1
        ts="$ts $t" i=$((i + 1))
    done
    # shellcheck disable=SC2086
    best $ts >"$out/$name"
}

echo "== dd, best of $REPS"
direct_w=yes direct_r=yes
dd_write w_direct oflag=direct 2>/dev/null || { direct_w=no; echo "   oflag=direct not supported here"; }
dd_write w_nosync || die "dd write failed"
dd_write w_fsync conv=fsync || die "dd write conv=fsync failed"
dd_read r_cached || die "dd read failed"
dd_read r_direct iflag=direct 2>/dev/null || { direct_r=no; echo "   iflag=direct not supported here"; }
cold=yes ts='' i=0
while [ "$cold" = yes ] && [ "$i" -lt "$REPS" ]; do
    # the file is clean (written with conv=fsync): nocache drops its pages
    if dd if="$f" iflag=nocache count=0 2>/dev/null; then
        t=$(dd_secs if="$f" of=/dev/null bs=4M) || die "dd read failed"
        ts="$ts $t" i=$((i + 1))
    else
        cold=no
        echo "   iflag=nocache not supported: no cold dd read"
    fi
done
# shellcheck disable=SC2086
[ "$cold" = no ] || best $ts >"$out/r_cold"
rm -f "$f"
mbps() { awk -v b="$bytes" -v t="$(cat "$out/$1")" 'BEGIN { printf "%.1f", b / t / 1e6 }'; }
dw=$(mbps w_nosync) dws=$(mbps w_fsync) drc=$(mbps r_cached)
dwd=n/a drd=n/a drcold=n/a
[ "$direct_w" = no ] || dwd=$(mbps w_direct)
[ "$direct_r" = no ] || drd=$(mbps r_direct)
[ "$cold" = no ] || drcold=$(mbps r_cold)
echo "   write, no fsync:     $dw MB/s"
echo "   write, conv=fsync:   $dws MB/s"
echo "   write, oflag=direct: $dwd MB/s"
echo "   read, page cache:    $drc MB/s"
echo "   read, iflag=direct:  $drd MB/s"
echo "   read, cold (nocache): $drcold MB/s"

# ---- ladle ----------------------------------------------------------------------------
ckpt_run() {   # ckpt_run RANKS
    echo "== bench_ckpt, $1 rank(s)"
    rc=0
    # shellcheck disable=SC2086
    "$MPIEXEC" -n "$1" --bind-to none "$BENCH_CKPT_BIN" "$data" $ARGS reps="$REPS" >"$out/ckpt$1" 2>&1 || rc=$?
    cat "$out/ckpt$1"
    [ "$rc" = 0 ] || die "bench_ckpt on $1 rank(s) exited $rc"
    [ "$(value verify "$out/ckpt$1" "bench_ckpt on $1 rank(s)")" = ok ] || die "bench_ckpt on $1 rank(s): read-back differs"
    [ "$(value ranks "$out/ckpt$1" "bench_ckpt on $1 rank(s)")" = "$1" ] ||
        die "bench_ckpt ran on $(value ranks "$out/ckpt$1" bench_ckpt) rank(s), not $1 (did $MPIEXEC start it right?)"
}
ckpt_run 1
ckpt_run 2
[ "$(value checksum "$out/ckpt1" bench_ckpt)" = "$(value checksum "$out/ckpt2" bench_ckpt)" ] ||
    die "the 1- and 2-rank checkpoints hold different data (checksums differ)"
[ -z "$(ls -A "$data")" ] || die "bench_ckpt left files behind in $data: $(ls -A "$data")"

# ---- the table -----------------------------------------------------------------------------
row() {   # row RANKS
    o=$out/ckpt$1
    echo "$1 $(value ckpt_bytes "$o" x) $(value write_MBps "$o" x) \
$(value read_MBps "$o" x) $(value read_cold_MBps "$o" x) $(value raw_write_MBps "$o" x) $(value raw_read_MBps "$o" x) \
$(value write_s "$o" x) $(value read_s "$o" x)"
}
{ row 1; row 2; } | awk -v payload="$payload" -v dw="$dw" -v dws="$dws" -v dwd="$dwd" -v drc="$drc" -v drd="$drd" \
    -v drcold="$drcold" -v target="$TARGET" -v reps="$REPS" -v secs="$(( $(date +%s) - start ))" '
function pct(x, ref) { return ref + 0 > 0 ? sprintf("%5.0f%%", 100 * x / ref) : "   n/a" }
function flag(x, ref) { return ref + 0 > 0 && 100 * x / ref < target ? " <" : "  " }
{ n++; r[n] = $1; fb[n] = $2; w[n] = $3; rd[n] = $4; rc[n] = $5; rw[n] = $6; rr[n] = $7; wt[n] = $8; rt[n] = $9 }
END {
    printf "\n==== ladle checkpoint I/O vs dd (same directory, same size; MB = 1e6 bytes, over the %.1f MB payload)\n", payload / 1e6
    printf "dd bs=4M: write %s MB/s without fsync, %s MB/s with conv=fsync, %s MB/s oflag=direct;\n", dw, dws, dwd
    printf "          read %s MB/s from the page cache, %s MB/s iflag=direct, %s MB/s cold (after iflag=nocache)\n\n", drc, drd, drcold
    printf "%5s %9s | %22s | %22s | %22s\n", "ranks", "file MB", "write (durable)", "read (page cache)", "read (cold)"
    printf "%5s %9s | %22s | %22s | %22s\n", "", "", "MB/s  vs dd fsync", "MB/s  vs dd cached", "MB/s  vs dd cold"
    for (i = 1; i <= n; i++)
        printf "%5d %9.1f | %8.1f %s%s     | %8.1f %s%s     | %8.1f %s%s\n", r[i], fb[i] / 1e6,
            w[i], pct(w[i], dws), flag(w[i], dws),
            rd[i], pct(rd[i], drc), flag(rd[i], drc), rc[i], pct(rc[i], drcold), flag(rc[i], drcold)
    printf "\nplain MPI-IO, same bytes (MPI_File_write_at_all / read_at_all, one contiguous block per rank and set):\n"
    for (i = 1; i <= n; i++)
        printf "  %d rank(s): write %.1f MB/s (ladle %s of it), read %.1f MB/s (ladle %s of it)\n", r[i], rw[i],
            pct(w[i], rw[i]), rr[i], pct(rd[i], rr[i])
    printf "\ntarget: ladle >= %d%% of dd (\"<\" marks a miss). ladle_ckpt_save is durable: every rank syncs its\n", target
    printf "writes (MPI_File_sync), rank 0 syncs the closed file, then renames it, so the like-for-like write is dd\n"
    printf "conv=fsync (plain MPI-IO also syncs before closing). dd without fsync (%s MB/s) is the page cache alone.\n", dw
    printf "All best of %d. Cold reads follow dropping the file'"'"'s pages (posix_fadvise DONTNEED / dd iflag=nocache):\n", reps
    printf "a VM host may still cache them. dd reads into one reused 4 MiB buffer, ladle (and plain MPI-IO) into the\n"
    printf "%.0f MB of state: the cached-read ratio is against a bound no reader into memory reaches. file MB is the\n", payload / 1e6
    printf "HDF5 file'"'"'s size: datasets >= 1 MiB start on 1 MiB boundaries, the gaps are reserved, never written.\n"
    printf "(took %d s; shared machine: rerun to compare)\n", secs
}'
