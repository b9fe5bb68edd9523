#!/bin/sh
# Bad input: a one-line error naming the key/file/value, exit code 2, and under mpiexec
# every rank exits (timeout guards against a hang).
. "$top_srcdir/test/lib.sh"
make_tmp
make_small_corpus "$TMP/corpus.h5"
passed=0

# expect_error NAME PATTERN CMD... : CMD fails with exit 2 and stderr matching PATTERN
expect_error() {
    name=$1 pattern=$2
    shift 2
    timeout 120 "$@" > "$TMP/err.out" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$TMP/err.out" >&2; fail "$name: exit code $rc, expected 2"; }
    grep -q -- "$pattern" "$TMP/err.out" || { cat "$TMP/err.out" >&2; fail "$name: message does not match '$pattern'"; }
    grep -q "^ladle: error:" "$TMP/err.out" || fail "$name: no 'ladle: error:' line"
    passed=$((passed + 1))
}

C="data.corpus=$TMP/corpus.h5"
expect_error "unknown key" "unknown configuration key 'model.layrs' (did you mean 'model.layers'?)" \
    "$LADLE" train model.layrs=2 $C run.dir="$TMP/r1"
expect_error "negative size" "model.dim '-8': expected an integer in \[1, 65536\]" "$LADLE" train model.dim=-8 $C run.dir="$TMP/r2"
expect_error "heads do not divide dim" "model.heads = 3 does not divide model.dim = 32" \
    "$LADLE" train model.dim=32 model.heads=3 $C run.dir="$TMP/r3"
expect_error "context longer than a domain" "context 60000" "$LADLE" train model.context=60000 model.dim=8 model.heads=1 model.layers=1 $C run.dir="$TMP/r4"
expect_error "missing corpus" "cannot open corpus '$TMP/nope.h5'" "$LADLE" train data.corpus="$TMP/nope.h5" run.dir="$TMP/r5"
printf 'not hdf5\n' > "$TMP/text.h5"
expect_error "corpus not HDF5" "is not an HDF5 file" "$LADLE" train data.corpus="$TMP/text.h5" run.dir="$TMP/r6"
expect_error "no corpus" "data.corpus is not set" "$LADLE" train run.dir="$TMP/r7"
printf 'model.layers = 2\nthis is not a setting\n' > "$TMP/bad.conf"
expect_error "bad config line" "bad.conf:2: expected 'key = value'" "$LADLE" train "$TMP/bad.conf" $C
expect_error "missing config file" "cannot open config file" "$LADLE" train "$TMP/none.conf" $C
expect_error "bad override value" "train.lr = 'fast'" "$LADLE" train train.lr=fast $C
# config files: what is not a regular file is refused without reading it (a FIFO would block
# forever, /dev/zero fill memory); a regular one is bounded; a UTF-8 byte-order mark is skipped
mkfifo "$TMP/fifo.conf"
expect_error "FIFO as config" "config file '$TMP/fifo.conf' is a FIFO, not a regular file" "$LADLE" train "$TMP/fifo.conf" $C
expect_error "/dev/zero as config" "config file '/dev/zero' is a character device" "$LADLE" train /dev/zero $C
expect_error "directory as config" "config file '$TMP' is a directory" "$LADLE" train "$TMP" $C
head -c 1048577 /dev/zero | tr '\0' '#' > "$TMP/big.conf"
expect_error "config over 1 MiB" "config file '$TMP/big.conf' is larger than 1 MiB" "$LADLE" train "$TMP/big.conf" $C
printf '\357\273\277model.layers = 3\n' > "$TMP/bom.conf"
"$LADLE" train "$TMP/bom.conf" $C run.dir="$TMP/bom" --dry-run > "$TMP/bom.out" 2>&1 \
    && grep -q '^  \* model.layers = 3$' "$TMP/bom.out" || { cat "$TMP/bom.out" >&2; fail "a config with a BOM"; }
printf '\357\273\277model.layrs = 3\n' > "$TMP/bom.conf"
expect_error "unknown key after a BOM" "bom.conf:1: unknown configuration key 'model.layrs'" "$LADLE" train "$TMP/bom.conf" $C
passed=$((passed + 1))
mkdir "$TMP/empty"
expect_error "empty domain" "empty" "$LADLE" prep -o "$TMP/x.h5" --domain e="$TMP/empty"
expect_error "unreadable input path" "$TMP/missing" "$LADLE" prep -o "$TMP/x.h5" --domain m="$TMP/missing"
[ ! -e "$TMP/x.h5" ] && [ ! -e "$TMP/x.h5.tmp" ] || fail "failed prep left a file behind"
passed=$((passed + 1))
expect_error "eval: model is a corpus" "is not a ladle-checkpoint file" "$LADLE" eval "$TMP/corpus.h5" --corpus "$TMP/corpus.h5"
expect_error "eval: corpus is a model-less text file" "is not an HDF5 file" "$LADLE" eval "$TMP/text.h5" --corpus "$TMP/corpus.h5"
expect_error "unknown command" "unknown command 'trian'" "$LADLE" trian
expect_error "bad FFN site" "model.ffn: 'smeer' is not a site kind" "$LADLE" train model.ffn=smeer $C
expect_error "FFN list length" "model.ffn lists 3 sites but model.layers = 2" "$LADLE" train model.layers=2 model.ffn=dense,moe,smear $C
expect_error "segment not dividing context" "smear.segment = 5 does not divide model.context = 32" "$LADLE" train model.context=32 model.ffn=smear smear.segment=5 $C

# Under MPI: every rank must exit with the error (no hang), and print it once.
for n in 2 3; do
    expect_error "unknown key on $n ranks" "did you mean 'model.layers'" $TESTMPIRUN $n "$LADLE" train model.layrs=2 $C run.dir="$TMP/m$n"
    [ "$(grep -c '^ladle: error:' "$TMP/err.out")" -eq 1 ] || fail "error printed more than once on $n ranks"
    expect_error "missing corpus on $n ranks" "cannot open corpus" $TESTMPIRUN $n "$LADLE" train data.corpus="$TMP/nope.h5" run.dir="$TMP/m$n"
done
echo "bad_input: $passed passed, 0 failed"
