#!/bin/sh
# Integer arguments: every integer option of every command, the thread-count variables and
# a train.* key refuse what would wrap or is not an integer: 2^32 (and 2^32 + 2, which an int
# reads as 2), 2^63, 2^64, a value below the option's minimum, trailing garbage, an empty
# value, a leading space or '+'. Each is exit 2 with a message naming the option and its
# range, before any work (a timeout guards against e.g. a batch that wrapped to a hang), and
# leaves no output file or run directory behind.
. "$top_srcdir/test/lib.sh"
make_tmp
make_small_corpus "$TMP/corpus.h5"
passed=0
C="data.corpus=$TMP/corpus.h5"
# real files, so that an option that got through would run (and be caught by the checks below)
# shellcheck disable=SC2086
"$LADLE" train $TINY train.steps=2 $C soup.experts=2 router.hidden=8 run.dir="$TMP/soup" > "$TMP/train.out" 2>&1 \
    || { cat "$TMP/train.out" >&2; fail "soup training"; }
# shellcheck disable=SC2086
"$LADLE" train $TINY train.steps=2 $C model.ffn=moe moe.experts=4 run.dir="$TMP/moe" > "$TMP/train.out" 2>&1 \
    || { cat "$TMP/train.out" >&2; fail "moe training"; }
SOUP="$TMP/soup/model.h5" MOE="$TMP/moe/model.h5" TEXT="$top_srcdir/src/ladle.c"

# bad_values OPTION MIN MAX CMD... : CMD OPTION VALUE is refused for every bad VALUE, naming
# OPTION, VALUE and [MIN, MAX]; VALUE is the last argument, so everything else was accepted.
bad_values() {
    opt=$1 min=$2 max=$3
    shift 3
    for v in 4294967296 4294967298 9223372036854775808 18446744073709551616 -9223372036854775809 \
        $((min - 1)) 12abc "" " 5" "+5" "5 " 0x10 1e3; do
        # a value in range is not bad (e.g. 0x10 is not, but "0" is, and 2^32 may be)
        case $v in
            *[!0-9-]* | "" | -) ;;
            *) [ ${#v} -lt 19 ] && [ "$v" -ge "$min" ] && [ "$v" -le "$max" ] && continue ;;
        esac
        refuse "$opt '$v': expected an integer in \[$min, $max\]" "$@" "$opt" "$v"
    done
}

PREP="prep -o $TMP/bad.h5 --domain c=$top_srcdir/src"
bad_values --seed 0 9223372036854775807 $PREP
for o in --max-doc-bytes --max-domain-bytes --split-doc-bytes; do bad_values $o 0 4611686018427387904 $PREP; done
for o in --clusters --embed-ngram --embed-buckets --embed-dim; do bad_values $o 1 16777216 $PREP --clusters 2; done
bad_values --ranks 1 1048576 train $C run.dir="$TMP/badrun" --dry-run
bad_values --examples 1 1048576 eval "$SOUP" --corpus "$TMP/corpus.h5" --specialize
bad_values --windows 1 16777216 eval "$SOUP" --corpus "$TMP/corpus.h5"
bad_values --batch 1 65536 eval "$SOUP" --corpus "$TMP/corpus.h5"
bad_values --bytes 0 1073741824 generate "$SOUP"
bad_values --seed 0 9223372036854775807 generate "$SOUP"
bad_values --steps 0 16777216 fit-weights "$SOUP" -o "$TMP/bad.h5" --like "$TEXT"
bad_values --windows 1 16777216 fit-weights "$SOUP" -o "$TMP/bad.h5" --like "$TEXT"
bad_values --experts 1 4096 prune "$MOE" -o "$TMP/bad.h5" --task "$TEXT"
bad_values --windows 1 16777216 prune "$MOE" -o "$TMP/bad.h5" --task "$TEXT" --experts 2
[ ! -e "$TMP/badrun" ] || fail "a refused --ranks created run.dir"
# the one parser: a configuration key says the same
refuse "train.batch '4294967296': expected an integer in \[1, 16777216\]" train $C run.dir="$TMP/badrun" \
    train.batch=4294967296 --dry-run
refuse "model.layers '2x': expected an integer in \[1, 1024\]" train $C run.dir="$TMP/badrun" model.layers=2x --dry-run
[ ! -e "$TMP/badrun" ] || fail "a refused key created run.dir"
# edges that must still pass: the bounds themselves, -0
"$LADLE" generate "$SOUP" --bytes 0 --seed 9223372036854775807 > "$TMP/gen.out" 2>&1 \
    || { cat "$TMP/gen.out" >&2; fail "generate at the bounds of --bytes and --seed"; }
"$LADLE" train $C --dry-run --ranks 1048576 > "$TMP/plan.out" 2>&1 || { cat "$TMP/plan.out" >&2; fail "--ranks 2^20"; }
passed=$((passed + 2))

# BLIS_NUM_THREADS, then OMP_NUM_THREADS without it: the same parser, in [1, 1024]; empty is unset
for var in BLIS_NUM_THREADS OMP_NUM_THREADS; do
    for v in 0 -1 1025 4294967297 9223372036854775808 2x " 2"; do
        env -u BLIS_NUM_THREADS "$var=$v" timeout 60 "$LADLE" keys > "$TMP/err" 2>&1
        rc=$?
        [ $rc -eq 2 ] && grep -q "^ladle: error: $var '$v': expected an integer in \[1, 1024\]" "$TMP/err" \
            || { cat "$TMP/err" >&2; fail "$var='$v': exit $rc"; }
        passed=$((passed + 1))
    done
    env -u BLIS_NUM_THREADS "$var=" "$LADLE" keys > /dev/null 2>&1 || fail "an empty $var is refused"
    env -u BLIS_NUM_THREADS "$var=2" "$LADLE" keys > /dev/null 2>&1 || fail "$var=2 is refused"
    passed=$((passed + 1))
done
echo "cli_ints: $passed passed, 0 failed"
