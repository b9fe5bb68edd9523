#!/bin/sh
# The command line and its documentation:
#  - 'ladle --help' lists the commands; each answers '--help' with exit 0 and its usage line
#    (once under mpiexec), and refuses an unknown option with exit 2 naming it;
#  - no command, an unknown command: exit 2; --version prints the configured version;
#  - the man page renders without a warning (groff -ww), has a section for every command and
#    only those, and names every option of every command's --help in that command's
#    section; its EXIT STATUS, --help's exit codes and the README's table list the codes
#    of include/ladle/error.h;
#  - the README's key table is exactly 'ladle keys' (make readme-keys pastes it).
. "$top_srcdir/test/lib.sh"
make_tmp
MAN="$top_srcdir/share/man/ladle.1"
README="$top_srcdir/README.md"
passed=0

# ---- ladle --help and the commands -----------------------------------------------------
"$LADLE" --help > "$TMP/help" 2>&1 || fail "ladle --help exits $?"
head -1 "$TMP/help" | grep -q "^usage: ladle COMMAND" || fail "ladle --help has no usage line"
for alias in -h help; do
    "$LADLE" $alias > "$TMP/alias" 2>&1 || fail "ladle $alias exits $?"
    cmp -s "$TMP/help" "$TMP/alias" || fail "ladle $alias differs from ladle --help"
done
# lists are kept as one line of words
words() { tr -s ' \n' '  ' | sed 's/^ //; s/ $//'; }
commands=$(awk '/^commands:/ { on = 1; next } on && /^$/ { on = 0 } on { print $1 }' "$TMP/help" | words)
[ "$(echo "$commands" | wc -w)" -ge 9 ] || fail "ladle --help lists too few commands: $commands"
for c in $commands; do
    "$LADLE" "$c" --help > "$TMP/$c.help" 2> "$TMP/$c.err" || fail "ladle $c --help exits $?"
    head -1 "$TMP/$c.help" | grep -q "^usage: ladle $c\( \|$\)" || { cat "$TMP/$c.help" >&2; fail "ladle $c --help: no usage line"; }
    [ ! -s "$TMP/$c.err" ] || { cat "$TMP/$c.err" >&2; fail "ladle $c --help wrote to stderr"; }
    "$LADLE" "$c" --no-such-option > "$TMP/bad" 2>&1
    rc=$?
    [ $rc -eq 2 ] || { cat "$TMP/bad" >&2; fail "ladle $c --no-such-option exits $rc, expected 2"; }
    grep -q "^ladle: error: .*'--no-such-option'" "$TMP/bad" || { cat "$TMP/bad" >&2; fail "ladle $c: the error does not name the option"; }
    passed=$((passed + 1))
done
echo "commands: $commands"
# rank 0 alone prints under mpiexec
run_mpi 2 "^usage: ladle train" "$LADLE" train --help || fail "ladle train --help under mpiexec"
[ "$(grep -c '^usage: ladle train' "$TMP/out")" -eq 1 ] || fail "ladle train --help printed by more than rank 0"

"$LADLE" > "$TMP/none" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "^usage: ladle COMMAND" "$TMP/none" || fail "ladle without a command: exit $rc"
"$LADLE" frobnicate > "$TMP/unknown" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "unknown command 'frobnicate'" "$TMP/unknown" || fail "unknown command: exit $rc"
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$top_builddir/config.h")
[ -n "$version" ] && [ "$("$LADLE" --version)" = "ladle $version" ] || fail "ladle --version is not 'ladle $version'"
passed=$((passed + 3))

# ---- exit codes: error.h's, everywhere they are documented -----------------------------
codes=$(sed -n 's/^ *LADLE_EXIT_[A-Z]* = \([0-9]*\),.*/\1/p' "$top_srcdir/include/ladle/error.h" | words)
[ "$codes" = "0 1 2 3" ] || fail "error.h's exit codes are '$codes': update the docs and this test"
exit_line=$(sed -n '/^exit codes:/,$p' "$TMP/help")
for c in $codes; do
    echo "$exit_line" | grep -q "[ :]$c [a-z]" || fail "ladle --help does not document exit code $c"
    awk '/^\.SH EXIT STATUS/ { on = 1; next } /^\.SH/ { on = 0 } on' "$MAN" | grep -q "^\.B $c$" \
        || fail "the man page's EXIT STATUS lacks $c"
    grep -q "^| $c | " "$README" || fail "the README's exit codes lack $c"
done
passed=$((passed + 1))

# ---- the man page ---------------------------------------------------------------------
if command -v groff > /dev/null 2>&1; then
    for dev in utf8 ascii; do
        groff -man -T$dev -ww -z "$MAN" > "$TMP/groff" 2>&1 || fail "groff -T$dev exits $?"
        [ ! -s "$TMP/groff" ] || { cat "$TMP/groff" >&2; fail "groff -man -T$dev -ww warns about ladle.1"; }
    done
    passed=$((passed + 1))
else
    echo "cli: groff not found: the man page is not rendered (its text is still checked)"
fi
# the roff source with \- as -: one block per '.SS "ladle COMMAND"'
sed 's/\\-/-/g' "$MAN" > "$TMP/man"
sections=$(sed -n 's/^\.SS "ladle \(.*\)"$/\1/p' "$TMP/man" | words)
[ "$sections" = "$commands" ] || fail "man page command sections '$sections' are not ladle --help's '$commands'"
for c in $commands; do
    awk -v c="$c" '$0 == ".SS \"ladle " c "\"" { on = 1; next } /^\.S[SH]/ { on = 0 } on' "$TMP/man" > "$TMP/man.$c"
    for opt in $(grep -o -- '--[a-z][-a-z]*' "$TMP/$c.help" | sort -u); do
        # the whole option: --json must not pass on the strength of --json-out
        grep -q -- "$opt\\([^-a-z]\\|$\\)" "$TMP/man.$c" || fail "the man page's section on '$c' does not document $opt"
    done
    awk '/^\.SH SYNOPSIS/ { on = 1; next } /^\.SH/ { on = 0 } on' "$TMP/man" | grep -q "^\.B ladle $c$" \
        || fail "the man page's SYNOPSIS lacks 'ladle $c'"
done
for s in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS CONFIGURATION "EXIT STATUS" ENVIRONMENT FILES EXAMPLES "SEE ALSO"; do
    grep -q "^\.SH \"\?$s\"\?$" "$TMP/man" || fail "the man page has no $s section"
done
grep -q "ladle keys" "$TMP/man" && grep -q "BLIS_NUM_THREADS" "$TMP/man" && grep -q "SLURM_" "$TMP/man" \
    || fail "the man page lacks 'ladle keys', BLIS_NUM_THREADS or SLURM_*"
passed=$((passed + 1))

# ---- the README's key table is 'ladle keys' --------------------------------------------
"$LADLE" keys > "$TMP/keys" || fail "ladle keys exits $?"
awk '/^<!-- keys:end -->$/ { on = 0 } on { print } /^<!-- keys:begin -->$/ { on = 1 }' "$README" > "$TMP/readme.keys"
[ -s "$TMP/readme.keys" ] || fail "the README has no keys table between its keys markers"
cmp -s "$TMP/keys" "$TMP/readme.keys" \
    || { diff "$TMP/readme.keys" "$TMP/keys" >&2; fail "the README's key table differs from 'ladle keys': run 'make readme-keys'"; }
passed=$((passed + 1))
echo "cli: $passed passed, 0 failed"
