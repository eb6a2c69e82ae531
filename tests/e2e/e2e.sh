#!/usr/bin/env bash
# End to end: the whole main job (run.sh --small, with the binaries of this
# build) and then its report in a real browser: headless Chromium renders
# out/report.html, and the page must show every image loaded, the metrics
# and published tables and both training charts. From the evaluation JSON,
# VBPR must beat BPR on cold items where users look, recall@100 of the
# cold users (BPR gives every cold item the same prior score, so among the
# new items alone it is exactly at chance). With
# the daemons still up, the CLI commands the job does not use (score,
# single-user recommend, an ingest with a broken image) are checked too.
#   tests/e2e/e2e.sh BUILD_DIR WORK_DIR
set -euo pipefail
build=$1
work=$2
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$work/out

fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
# The job fetches its weights with npm and the checks below run in node.
if ! command -v node >/dev/null 2>&1; then
	echo "skipped: node is not installed (deploy/install-deps.sh installs nodejs)"
	exit 77
fi

rm -rf "$work"
mkdir -p "$work"
profile=$(mktemp -d)
daemons=
cleanup() {
	rm -rf "$profile"
	[ -n "$daemons" ] || return 0
	# These are the daemons run.sh started for this test (--keep-running).
	kill -TERM $daemons 2>/dev/null || true
	for _ in $(seq 100); do kill -0 $daemons 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL $daemons 2>/dev/null || true
}
trap cleanup EXIT
"$src/run.sh" --small --no-build --build "$build" --out "$out" --keep-running ||
	fail "run.sh --small exited with $?"
daemons=$(cat "$out/daemons.pid")

report=$out/report.html
[ -s "$report" ] || fail "$report was not written"

# Self-contained: no resource from the network (the SVG namespace is a name,
# not a fetch).
if grep -Eo '(src|href)="[a-z]+://[^"]*"|<link |@import' "$report" | grep -v 'www.w3.org/2000/svg'; then
	fail "the report refers to external resources (above)"
fi

# Chromium as root needs --no-sandbox; without the network switches it
# stalls on look-ups. The virtual time budget lets the load event (and
# the page's image check) run before the DOM is dumped.
chrome_flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
	--disable-background-networking --disable-component-update --disable-sync
	--virtual-time-budget=15000)
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || fail "chromium is not installed (deploy/install-deps.sh --test installs it)"
timeout 120 "$chromium" "${chrome_flags[@]}" --user-data-dir="$profile" --dump-dom \
	"file://$report" >"$work/dom.html" 2>"$work/chromium.log" ||
	fail "chromium --dump-dom failed (see $work/chromium.log)"
timeout 120 "$chromium" "${chrome_flags[@]}" --user-data-dir="$profile" --window-size=1300,2400 \
	--screenshot="$work/report.png" "file://$report" >>"$work/chromium.log" 2>&1 ||
	fail "chromium --screenshot failed (see $work/chromium.log)"

check=$(grep -o '<span id="img-check"[^>]*>[^<]*' "$work/dom.html" || true)
[ -n "$check" ] || fail "no image check in the rendered page"
echo "e2e: $check"
total=$(sed -n 's/.*data-total="\([0-9]*\)".*/\1/p' <<<"$check")
broken=$(sed -n 's/.*data-broken="\([0-9]*\)".*/\1/p' <<<"$check")
[ -n "$total" ] && [ -n "$broken" ] || fail "the image check did not run: $check"
[ "$broken" = 0 ] || fail "$broken of $total images did not load"
# 4 users: 10 consumed + 1 ground truth + 2 models x 20 at least.
[ "$total" -ge 150 ] || fail "only $total images on the page"
for id in data-table metrics-table published-table training-table chart-loss chart-auc users; do
	grep -q "id=\"$id\"" "$work/dom.html" || fail "the rendered page has no #$id"
done
grep -q 'Published, Wikimedia data' "$work/dom.html" || fail "the published table is not labelled"
[ "$(grep -o 'class="user"' "$work/dom.html" | wc -l)" -ge 4 ] || fail "fewer than 4 users shown"
grep -q '<polyline' "$work/dom.html" || fail "no training curve drawn"
if grep -q '"status":"UNIMPLEMENTED"' "$out/train-dvbpr.json" 2>/dev/null; then
	grep -q 'DVBPR</b>: not available in this build (UNIMPLEMENTED' "$work/dom.html" ||
		fail "DVBPR is unimplemented but the page does not say so"
fi

# VBPR beats BPR on cold items where users look, in both protocols: the
# cold users' recall@100. Not their AUC over all items: BPR's cold prior
# (one value for every cold item) puts them above most warm items, which
# that AUC rewards although BPR cannot tell one cold item from another.
# On this small set the win comes from VBPR's prior spreading the cold
# items' scores (some reach a top 100), not from telling which suits whom:
# the "new" subset (among cold items only) is at chance for every model.
node - "$out" <<'EOF' || fail "VBPR does not beat BPR on cold items"
const fs = require('fs');
const out = process.argv[2];
const cold = (model, protocol) => {
  const e = JSON.parse(fs.readFileSync(`${out}/eval-${model}-${protocol}.json`, 'utf8'));
  const r = e.results.find((x) => x.subset === 'cold');
  const n = e.results.find((x) => x.subset === 'new');
  if (!r || !(r.users > 0)) throw new Error(`${model} ${protocol}: no cold users`);
  if (!n || n.users !== r.users) throw new Error(`${model} ${protocol}: no "new" subset`);
  // "warm": every other user, their item among the warm items only.
  const a = e.results.find((x) => x.subset === 'all');
  const w = e.results.find((x) => x.subset === 'warm');
  if (!a || !w || w.users + r.users !== a.users || !(w.auc > 0 && w.auc <= 1))
    throw new Error(`${model} ${protocol}: the "warm" subset does not hold the other users`);
  const at = r.at_k.find((x) => x.k === 100);
  if (!at) throw new Error(`${model} ${protocol}: no recall@100`);
  return { auc: r.auc, r100: at.recall, newAuc: n.auc };
};
let ok = true;
for (const p of ['standard', 'tutorial']) {
  const b = cold('bpr', p), v = cold('vbpr', p);
  console.log(`e2e: cold users, ${p} protocol: recall@100 BPR ${b.r100.toFixed(4)}, ` +
              `VBPR ${v.r100.toFixed(4)}; AUC BPR ${b.auc.toFixed(4)}, VBPR ${v.auc.toFixed(4)}; ` +
              `among new items AUC BPR ${b.newAuc.toFixed(4)}, VBPR ${v.newAuc.toFixed(4)}`);
  if (!(v.r100 > b.r100 + 0.05)) ok = false;
  // Among new items BPR has nothing to go by: every one ties (0.5). The
  // small set's 30 new items are too few for VBPR to show what it learnt
  // there (.49 to .52 here, every model); the full-size run's figures do.
  if (Math.abs(b.newAuc - 0.5) > 1e-9) ok = false;
}
process.exit(ok ? 0 : 1);
EOF
# The CLI against the daemons the job left running.
visrec=$build/tools/visrec
export VISREC_FEATURED=$(sed -n 's/.* listening on //p' "$out/featured.addr")
export VISREC_RANKD=$(sed -n 's/.* listening on //p' "$out/rankd.addr")
"$visrec" health >/dev/null || fail "visrec health"
"$visrec" info >"$work/info.txt" || fail "visrec info"
grep -q "items 600," "$work/info.txt" || fail "info does not show 600 items: $(cat "$work/info.txt")"
user=$(head -n 2 "$out/data/interactions.csv" | tail -n 1 | cut -d, -f1)
"$visrec" recommend --user "$user" -k 5 >"$work/rec.txt" || fail "visrec recommend"
[ "$(grep -c '^ *[0-9]\+  ' "$work/rec.txt")" = 5 ] || fail "recommend -k 5 printed: $(cat "$work/rec.txt")"
"$visrec" --json score --user "$user" i000003 i000001 >"$work/score.json" || fail "visrec score"
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const ids = r.items.map((x) => x.item_id).join(",");
if (ids !== "i000003,i000001" || !r.items.every((x) => Number.isFinite(x.score))) {
  console.error("score answered " + JSON.stringify(r)); process.exit(1);
}' "$work/score.json" || fail "score does not answer the items in order"
# Ingest: a broken image is listed with its status, the good one sent
# after it is stored (a refused JPEG must not poison the decoder).
mkdir -p "$work/more"
cp "$out/data/images/i000001.jpg" "$work/more/extra-2-good.jpg"
head -c 300 "$out/data/images/i000002.jpg" >"$work/more/extra-1-bad.jpg"
st=0
"$visrec" ingest "$work/more" >"$work/ingest.out" 2>"$work/ingest.err" || st=$?
[ $st = 3 ] || fail "ingest with a broken image: exit status $st, expected 3"
grep -q "1 stored, 1 rejected" "$work/ingest.out" || fail "ingest summary: $(cat "$work/ingest.out")"
grep -q "extra-1-bad: INVALID_ARGUMENT" "$work/ingest.err" || fail "ingest errors: $(cat "$work/ingest.err")"

echo "e2e: ok (report $report, screenshot $work/report.png)"
