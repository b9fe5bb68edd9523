#!/bin/sh
# --json: stdout holds one JSON document and nothing else (notes such as "soup ... at h ="
# go to stderr), on 1 and 2 ranks, for every command with the option: eval (a dense model,
# a soup at uniform and at --weights, --routing, --specialize) and inspect (a corpus, a
# clustered corpus, a dense model, a soup, a checkpoint, a --dump). Names and paths are
# escaped: the files live under a directory whose name holds '"' and '\', and one domain
# of a copy of the corpus is renamed to hold both.
. "$top_srcdir/test/lib.sh"
make_tmp
: "${PYTHON3:=/usr/bin/python3}"
passed=0
D="$TMP/q\"uote\\back"
mkdir "$D" || fail "mkdir $D"
make_small_corpus "$D/corpus.h5"
"$LADLE" prep -o "$D/clustered.h5" --valid-fraction 0.2 --split-doc-bytes 2048 --clusters 2 \
    --domain c="$top_srcdir/src" --domain headers="$top_srcdir/include" > "$TMP/prep.out" 2>&1 \
    || { cat "$TMP/prep.out" >&2; fail "prep --clusters"; }
# shellcheck disable=SC2086
"$LADLE" train $TINY train.steps=2 data.corpus="$D/corpus.h5" run.dir="$D/dense" > "$TMP/train.out" 2>&1 \
    || { cat "$TMP/train.out" >&2; fail "dense training"; }
# shellcheck disable=SC2086
"$LADLE" train $TINY train.steps=2 ckpt.every=1 data.corpus="$D/corpus.h5" soup.experts=2 router.hidden=8 \
    run.dir="$D/soup" > "$TMP/train.out" 2>&1 || { cat "$TMP/train.out" >&2; fail "soup training"; }
# shellcheck disable=SC2086
"$LADLE" train $TINY train.steps=2 data.corpus="$D/clustered.h5" soup.experts=2 router.hidden=8 \
    run.dir="$D/csoup" > "$TMP/train.out" 2>&1 || { cat "$TMP/train.out" >&2; fail "clustered soup training"; }
# shellcheck disable=SC2086
"$LADLE" train $TINY train.steps=2 data.corpus="$D/corpus.h5" model.ffn=moe moe.experts=2 run.dir="$D/moe" \
    > "$TMP/train.out" 2>&1 || { cat "$TMP/train.out" >&2; fail "moe training"; }
CKPT=$(ls "$D"/soup/ckpt-*.h5 | head -1)

# json_only N CHECK ARGS... : 'ladle ARGS' on N ranks exits 0 and its stdout parses as one
# JSON document for which the Python expression CHECK (of j) holds
json_only() {
    n=$1 check=$2
    shift 2
    # shellcheck disable=SC2086
    timeout 300 $TESTMPIRUN "$n" "$LADLE" "$@" > "$TMP/json" 2> "$TMP/stderr" \
        || { cat "$TMP/stderr" >&2; fail "'$*' on $n ranks exits $?"; }
    "$PYTHON3" -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
        "$TMP/json" "$check" || { cat "$TMP/json" >&2; fail "'$*' on $n ranks: stdout is not JSON with $check"; }
    passed=$((passed + 1))
}

C="--corpus $D/corpus.h5"
three='[d["domain"] for d in j["domains"]] == ["c", "headers", "tests"]'
for n in 1 2; do
    json_only $n "$three" eval "$D/dense/model.h5" $C --json --windows 2
    json_only $n "$three" eval "$D/soup/model.h5" $C --json --windows 2
    grep -qF "soup $D/soup/model.h5 at h = " "$TMP/stderr" || fail "the soup's note is not on stderr"
    json_only $n "$three" eval "$D/soup/model.h5" $C --json --windows 2 --weights c=1,tests=1
    json_only $n '[s["kind"] for s in j["routing"]] == ["moe", "moe"]' eval "$D/moe/model.h5" $C --json --routing --windows 2
    json_only $n 'len(j["rows"]) == 3' eval "$D/soup/model.h5" $C --json --specialize --windows 2 --examples 2
    json_only $n 'len(j["rows"]) == 2' eval "$D/csoup/model.h5" --corpus "$D/clustered.h5" --json --specialize \
        --windows 2 --examples 2 --baseline "$D/dense/model.h5"
    json_only $n 'j["file"].endswith("/corpus.h5") and "\"uote\\back" in j["file"]' inspect "$D/corpus.h5" --json
    json_only $n 'j["kind"] == "clustered corpus"' inspect "$D/clustered.h5" --json
    json_only $n '"tensors" in j' inspect "$D/dense/model.h5" --json
    json_only $n '"tensors" in j' inspect "$D/soup/model.h5" --json
    json_only $n 'j["kind"] == "training checkpoint"' inspect "$CKPT" --json
    json_only $n 'len(j["values"]) > 0' inspect "$D/dense/model.h5" --json --dump shared/h.0.ffn.w1
done

# a domain name with '"' and '\' (prep allows neither, but a corpus file may hold anything)
if "$PYTHON3" -c 'import h5py' 2> /dev/null; then
    cp "$D/corpus.h5" "$TMP/odd.h5"
    "$PYTHON3" -c 'import sys, h5py; h5py.File(sys.argv[1], "r+")["domains"].move("tests", "te\"s\\ts")' "$TMP/odd.h5" \
        || fail "renaming a domain"
    odd='[d["domain"] for d in j["domains"]] == ["c", "headers", "te\"s\\ts"]'
    json_only 1 "$odd" eval "$D/dense/model.h5" --corpus "$TMP/odd.h5" --json --windows 2
    json_only 1 "$odd and j[\"routing\"][0][\"domains\"][2][\"domain\"] == \"te\\\"s\\\\ts\"" \
        eval "$D/moe/model.h5" --corpus "$TMP/odd.h5" --json --routing --windows 2
    json_only 1 '[d["name"] for d in j["domains"]] == ["c", "headers", "te\"s\\ts"]' inspect "$TMP/odd.h5" --json
    # the specialist table, from a copy of the soup whose domains carry the same name
    cp "$D/soup/model.h5" "$TMP/odd-soup.h5"
    "$PYTHON3" -c 'import sys, h5py; f = h5py.File(sys.argv[1], "r+"); f.attrs["domains"] = ["c", "headers", "te\"s\\ts"]' \
        "$TMP/odd-soup.h5" || fail "renaming the soup's domains"
    json_only 1 'j["rows"][2]["domain"] == "te\"s\\ts"' eval "$TMP/odd-soup.h5" --corpus "$TMP/odd.h5" --json \
        --specialize --windows 2 --examples 2
    # metrics.jsonl: every line is JSON, the evaluated domain's name included
    # shellcheck disable=SC2086
    "$LADLE" train $TINY train.steps=2 data.corpus="$TMP/odd.h5" run.dir="$TMP/odd-run" > "$TMP/train.out" 2>&1 \
        || { cat "$TMP/train.out" >&2; fail "training on the odd corpus"; }
    "$PYTHON3" -c 'import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]
assert any(r.get("domain") == "te\"s\\ts" for r in rows), rows' "$TMP/odd-run/metrics.jsonl" \
        || fail "metrics.jsonl is not JSON lines with the odd domain name"
    passed=$((passed + 1))
else
    echo "json_stdout: h5py not found: the escaping of domain names is not checked"
fi
echo "json_stdout: $passed passed, 0 failed"
