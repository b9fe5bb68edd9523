#!/bin/sh
# Damaged corpora: a file cut short, a split shorter than its offsets say, offsets that
# point past the end or go backwards, and a valid split shorter than one window (with
# evaluation on). Each is one clear error naming the file, the domain and the dataset, exit
# code 2, on every rank (1 and 2), before anything is written; streamed and in memory.
. "$top_srcdir/test/lib.sh"
make_tmp
need_h5py
make_small_corpus "$TMP/corpus.h5"
passed=0

# damage NAME PYTHON: a copy of the corpus as $TMP/NAME.h5, changed by PYTHON (f is the file)
damage() {
    cp "$TMP/corpus.h5" "$TMP/$1.h5"
    "$PYTHON3" - "$TMP/$1.h5" "$2" <<'PY' || fail "damaging the corpus: $2"
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r+")
def rewrite(name, data):
    del f[name]
    f.create_dataset(name, data=data)
exec(sys.argv[2])
f.close()
PY
}
# expect NAME PATTERN KEYS...: training on NAME.h5 fails as it should, on 1 and 2 ranks, both reads
expect() {
    name=$1 pattern=$2
    shift 2
    for n in 1 2; do
        for read in stream memory; do
            timeout 120 $TESTMPIRUN $n "$LADLE" train $TINY train.steps=4 data.read=$read "$@" \
                data.corpus="$TMP/$name.h5" run.dir="$TMP/run-$name" > "$TMP/err" 2>&1
            rc=$?
            [ $rc -eq 2 ] || { cat "$TMP/err" >&2; fail "$name ($n ranks, $read): exit $rc, expected 2"; }
            grep -q -- "$pattern" "$TMP/err" || { cat "$TMP/err" >&2; fail "$name ($n ranks, $read): message lacks '$pattern'"; }
            [ "$(grep -c '^ladle: error:' "$TMP/err")" -eq 1 ] || { cat "$TMP/err" >&2; fail "$name: not one error line"; }
            [ ! -e "$TMP/run-$name/model.h5" ] && [ -z "$(ls "$TMP/run-$name" 2>/dev/null | grep ckpt)" ] ||
                fail "$name: a model or checkpoint was written"
        done
    done
    passed=$((passed + 1))
}

# a copy cut short (an interrupted transfer): HDF5 refuses the file as a whole
head -c "$(($(wc -c < "$TMP/corpus.h5") * 2 / 3))" "$TMP/corpus.h5" > "$TMP/cut.h5"
expect cut "corpus '$TMP/cut.h5' is not a readable HDF5 file (damaged or truncated?)"
# the split lost its last bytes, its offsets did not
damage short-train 'rewrite("domains/c/train", f["domains/c/train"][:-1000])'
expect short-train "corpus '$TMP/short-train.h5' is damaged: 'train_offsets' of domain 'c' points past the end of its split"
# an offset past the end, in the middle
damage past-end 'o = f["domains/headers/valid_offsets"][...]; o[1] = o[-1] + 7; rewrite("domains/headers/valid_offsets", o)'
expect past-end "'valid_offsets' of domain 'headers' points past the end of its split"
# offsets that stop before the end
damage early-end 'o = f["domains/tests/train_offsets"][...]; o[-1] -= 5; rewrite("domains/tests/train_offsets", o)'
expect early-end "'train_offsets' of domain 'tests' ends at byte"
# a valid split shorter than one window (33 bytes at model.context 32), evaluation on
damage tiny-valid 'rewrite("domains/tests/valid", f["domains/tests/valid"][:20]); rewrite("domains/tests/valid_offsets", np.array([0, 20], dtype=np.uint64))'
expect tiny-valid "domain 'tests' of corpus '$TMP/tiny-valid.h5': its 'valid' dataset holds 20 bytes, shorter than one window" eval.every=2
# ... which trains with evaluation off
run_mpi 1 "^done: 4 steps" "$LADLE" train $TINY train.steps=4 data.corpus="$TMP/tiny-valid.h5" run.dir="$TMP/tiny-ok" ||
    fail "a tiny valid split with eval.every=0"
passed=$((passed + 1))
# ladle eval refuses the damaged ones too
for name in short-train past-end; do
    timeout 120 "$LADLE" eval "$TMP/tiny-ok/model.h5" --corpus "$TMP/$name.h5" > "$TMP/err" 2>&1
    [ $? -eq 2 ] && grep -q "is damaged" "$TMP/err" || { cat "$TMP/err" >&2; fail "eval on $name"; }
done
passed=$((passed + 1))
echo "bad_corpus: $passed passed, 0 failed"
