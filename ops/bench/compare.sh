#!/usr/bin/env bash
# ops/bench/compare.sh: the same benchmarks for an older commit and this checkout, in one run,
# and every figure of the two side by side: how a refactor is shown to change no speed.
#
#   bash ops/bench/compare.sh b289a9e                       # all four scripts, default sizes
#   SCRIPTS="writer replicate" bash ops/bench/compare.sh b289a9e
#   BASE_TREE=/work/base bash ops/bench/compare.sh b289a9e  # reuse a worktree (and its build)
#   HEAD_TREE=/work/head bash ops/bench/compare.sh b289a9e  # the head side from another tree
#
# The base commit is checked out as a git worktree (BASE_TREE, default
# /tmp/apiary-bench-base-<rev>) and built there by its own scripts; tests/js/node_modules is
# linked from this checkout. Each script of SCRIPTS (writer replicate aggregator dht) runs
# for the base, then for this checkout, back to back with the same environment (the knobs of
# each script pass through: N, ROUNDS, PARTS, ...). Then, for each script, one table: every
# numeric figure of the two result files (results/<bench>-<date>.json), base, head and
# head/base. Figures that are settings or dates (the `meta` objects) are left out.
#
# Load on a shared machine moves figures by 10-20% from one minute to the next: read a ratio
# far from 1 as a reason to run that script again (ROUNDS), not as a verdict.
set -euo pipefail
cd "$(dirname "$0")"
HEAD_TREE=${HEAD_TREE:-$(cd ../.. && pwd)}

REV=${1:?usage: compare.sh BASE_REV}
SCRIPTS=${SCRIPTS:-writer replicate aggregator dht}
BASE_TREE=${BASE_TREE:-/tmp/apiary-bench-base-$REV}
OUT=${OUT:-results/compare-$(date -u +%Y-%m-%dT%H-%M-%SZ)}
mkdir -p "$OUT"

if [[ ! -d $BASE_TREE ]]; then
  git -C "$HEAD_TREE" worktree add --detach "$BASE_TREE" "$REV" >&2
fi
if [[ ! -e $BASE_TREE/tests/js/node_modules && -d $HEAD_TREE/tests/js/node_modules ]]; then
  ln -s "$HEAD_TREE/tests/js/node_modules" "$BASE_TREE/tests/js/node_modules"
fi
echo "# base $(git -C "$BASE_TREE" rev-parse --short HEAD) in $BASE_TREE; head $(git -C "$HEAD_TREE" rev-parse --short HEAD) in $HEAD_TREE" >&2

newest() { ls -t "$1"/ops/bench/results/"$2"-*.json 2>/dev/null | head -n1; }

# Every numeric leaf outside `meta`, as "path<TAB>value" (array elements by index).
flatten() {
  jq -r 'del(.meta) | paths(numbers) as $p | [($p | map(tostring) | join(".")), getpath($p)] | @tsv' "$1"
}

for s in $SCRIPTS; do
  for side in base head; do
    tree=$BASE_TREE
    [[ $side == head ]] && tree=$HEAD_TREE
    echo "# $s: $side" >&2
    before=$(newest "$tree" "$s" || true)
    bash "$tree/ops/bench/run-$s.sh" >"$OUT/$s-$side.out"
    after=$(newest "$tree" "$s")
    if [[ -z $after || $after == "$before" ]]; then
      echo "# $s ($side) wrote no result file" >&2
      exit 1
    fi
    cp "$after" "$OUT/$s-$side.json"
  done
  echo "## $s (base $REV → head)"
  join -t $'\t' -a1 -a2 -e '-' -o 0,1.2,2.2 \
    <(flatten "$OUT/$s-base.json" | sort -t $'\t' -k1,1) \
    <(flatten "$OUT/$s-head.json" | sort -t $'\t' -k1,1) |
    awk -F'\t' 'BEGIN { printf "%-72s %14s %14s %8s\n", "figure", "base", "head", "head/base" }
      { r = ($2 != "-" && $3 != "-" && $2 + 0 != 0) ? sprintf("%.2f", $3 / $2) : "-";
        printf "%-72s %14s %14s %8s\n", $1, $2, $3, r }'
  echo
done | tee "$OUT/compare.txt"
echo "# tables in $OUT/compare.txt" >&2
