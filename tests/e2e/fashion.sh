#!/usr/bin/env bash
# End to end on real photographs: the main job at a small size with
# run.sh --images fashion-mnist (Debian's dataset-fashion-mnist, which
# deploy/install-deps.sh installs). The data set must be the garment one
# (datagen's meta.json), every model must be trained and evaluated on it
# with users in both subsets, and the report must say which images it ran on.
#   tests/e2e/fashion.sh BUILD_DIR WORK_DIR
set -euo pipefail
build=$1
work=$2
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$work/out

fail() { echo "e2e.fashion: FAIL: $*" >&2; exit 1; }
if ! command -v node >/dev/null 2>&1; then
	echo "skipped: node is not installed (deploy/install-deps.sh installs nodejs)"
	exit 77
fi
rm -rf "$work"
mkdir -p "$work"
"$src/run.sh" --small --images fashion-mnist --no-build --build "$build" --out "$out" ||
	fail "run.sh --small --images fashion-mnist exited with $?"
grep -q '"kind":[[:space:]]*"fashion-mnist"' "$out/data/meta.json" ||
	fail "the data set is not the Fashion-MNIST one: $(grep -A2 '"images"' "$out/data/meta.json")"
grep -q 'real garment photographs (Fashion-MNIST)' "$out/report.html" ||
	fail "the report does not say it ran on Fashion-MNIST images"
node - "$out" <<'JS' || fail "an evaluation is missing or empty"
const fs = require('fs');
const out = process.argv[2];
for (const m of ['bpr', 'vbpr', 'dvbpr'])
  for (const p of ['standard', 'tutorial']) {
    const e = JSON.parse(fs.readFileSync(`${out}/eval-${m}-${p}.json`, 'utf8'));
    for (const s of ['all', 'cold']) {
      const r = e.results.find((x) => x.subset === s);
      if (!r || !(r.users > 0) || !(r.auc > 0 && r.auc < 1)) throw new Error(`${m} ${p} ${s}: ${JSON.stringify(r)}`);
      console.log(`e2e.fashion: ${m} ${p} ${s}: AUC ${r.auc.toFixed(4)} over ${r.users} users`);
    }
  }
JS
echo "e2e.fashion: ok (report $out/report.html)"
