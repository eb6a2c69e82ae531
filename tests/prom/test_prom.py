#!/usr/bin/python3
"""Prometheus metrics and JSON logs of real daemons on loopback.

featured and rankd run with --metrics-listen 127.0.0.1:0 and --log-format
json; the CLI ingests generated JPEGs, imports interactions, makes calls
that fail on purpose and trains BPR, and both endpoints are scraped during
the ingest and the Train and after. Every scrape is parsed by the strict
parser below (every sample in a HELP'd and TYPE'd family, label syntax,
histogram buckets monotone with +Inf equal to _count). Checked:
- request counts by method and code equal the calls made (OK,
  INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION), and each method's
  histogram _count equals the sum of its codes;
- featured's images decoded and embedded equal the images sent, a broken
  JPEG counts as refused bad_image; rankd's feed reaches featured's last
  change with lag 0; rankd's
  interactions, users and items equal the data set's; training's epoch,
  loss and AUC move, the served model appears in model_info;
- /metrics answers only GET and HEAD (405 otherwise), other paths 404;
- a metrics address beyond loopback is refused without --metrics-public;
- every metric the Grafana dashboard queries exists in the scrapes;
- every stderr line of both daemons is one JSON object with ts, level,
  component and msg, and the lines about a call carry method and peer;
- with metrics on, the idle pair uses at most 2% of a core.

  test_prom.py BUILD_DIR WORK_DIR SOURCE_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from promtest import Daemon, scrape, value  # noqa: E402

BUILD, WORK, SRC = sys.argv[1], sys.argv[2], sys.argv[3]
VISREC = os.path.join(BUILD, "tools", "visrec")
FEATURED = os.path.join(BUILD, "featured", "featured")
RANKD = os.path.join(BUILD, "rankd", "rankd")
USERS, ITEMS, INTERACTIONS, BATCH = 60, 120, 1200, 40

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def cli(*args, ok=True):
    r = subprocess.run([VISREC, "--featured", featured.addr, "--rankd", rankd.addr] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if ok and r.returncode:
        raise RuntimeError("visrec %s: %s" % (" ".join(args), r.stderr))
    return r


def requests(fams, method, code):
    return value(fams, "visrec_rpc_requests_total", method=method, code=code) or 0


def scrape_while(proc, addr, until):
    """Scrapes addr until proc ends; every scrape must parse. Returns the
    scrapes for which until(fams) held, and how many there were."""
    seen, n = [], 0
    while True:
        done = proc.poll() is not None
        fams = scrape(addr)
        n += 1
        if until(fams):
            seen.append(fams)
        if done:
            return seen, n
        time.sleep(0.02)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
data = os.path.join(WORK, "data")
subprocess.run([VISREC, "datagen", "--out", data, "--users", str(USERS), "--items", str(ITEMS),
                "--interactions", str(INTERACTIONS), "--image-min", "32", "--image-max", "64"],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

# A metrics address beyond loopback needs its own opt-in.
r = subprocess.run([FEATURED, "--data", os.path.join(WORK, "refused"), "--listen", "127.0.0.1:0",
                    "--metrics-listen", "0.0.0.0:0"], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, timeout=30)
check(r.returncode == 2 and "--metrics-public" in r.stderr,
      "featured --metrics-listen 0.0.0.0:0 without --metrics-public: exit %d, %r"
      % (r.returncode, r.stderr[-300:]))

featured = Daemon("featured", [FEATURED, "--data", os.path.join(WORK, "fd"), "--listen",
                               "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                               "--log-format", "json", "--batch-wait-ms", "20"], WORK)
rankd = None
try:
    rankd = Daemon("rankd", [RANKD, "--data", os.path.join(WORK, "rk"), "--listen", "127.0.0.1:0",
                             "--featured", featured.addr, "--metrics-listen", "127.0.0.1:0",
                             "--log-format", "json", "--log-level", "debug"], WORK)
    f0, r0 = scrape(featured.metrics), scrape(rankd.metrics)
    check(value(f0, "visrec_featured_images_embedded_total") == 0, "featured starts at 0 images")
    check(value(r0, "visrec_rankd_training") == 0, "rankd is not training at start")

    # Only GET (and HEAD) of /metrics.
    for method, path, want in (("POST", "/metrics", 405), ("GET", "/", 404),
                               ("GET", "/metrics/x", 404), ("HEAD", "/metrics", 200)):
        req = urllib.request.Request("http://%s%s" % (featured.metrics, path), method=method,
                                     data=b"x" if method == "POST" else None)
        try:
            code = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        check(code == want, "%s %s answered %d, not %d" % (method, path, code, want))

    # Ingest, scraped as it goes.
    ingest = subprocess.Popen([VISREC, "--featured", featured.addr, "ingest", data, "--batch",
                               str(BATCH), "--streams", "1"], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(WORK, "ingest.err"), "w"))
    during, n = scrape_while(ingest, featured.metrics,
                             lambda f: 0 < (value(f, "visrec_featured_images_decoded_total") or 0) < ITEMS)
    check(ingest.returncode == 0, "ingest failed: %s" % open(os.path.join(WORK, "ingest.err")).read()[-500:])
    print("ingest: %d scrapes, %d while it ran" % (n, len(during)))
    decoded = [value(f, "visrec_featured_images_decoded_total") for f in during]
    check(decoded == sorted(decoded), "decoded went back during the ingest: %s" % decoded)
    calls = -(-ITEMS // BATCH)
    f1 = scrape(featured.metrics)
    check(value(f1, "visrec_featured_images_decoded_total") == ITEMS, "decoded != %d" % ITEMS)
    check(value(f1, "visrec_featured_images_embedded_total") == ITEMS, "embedded != %d" % ITEMS)
    check(value(f1, "visrec_featured_items") == ITEMS, "items != %d" % ITEMS)
    check(value(f1, "visrec_featured_queue_images") == 0, "the queue is not empty after the ingest")
    check(value(f1, "visrec_featured_stage_seconds_total", stage="network") > 0, "no network time")
    check(value(f1, "visrec_featured_stage_seconds_total", stage="decode") > 0, "no decode time")
    check(value(f1, "visrec_store_used_bytes") > 0, "no store use")
    check(requests(f1, "visrec.v1.Featured/PutItems", "OK") == calls,
          "PutItems OK %s != %d" % (requests(f1, "visrec.v1.Featured/PutItems", "OK"), calls))
    check(value(f1, "visrec_rpc_in_flight", method="visrec.v1.Featured/PutItems") == 0,
          "a PutItems still in flight")
    check(value(f1, "visrec_featured_model_info", version="1", arch="small", layer="output") == 1,
          "featured_model_info of version 1")
    # A broken JPEG is refused as a bad image, the rest of the call is not.
    bad = os.path.join(WORK, "bad")
    os.makedirs(bad)
    with open(os.path.join(bad, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not a JPEG after all")
    r = cli("ingest", bad, ok=False)
    check(r.returncode == 3, "ingest of a broken JPEG exited %d, not 3" % r.returncode)
    f2 = scrape(featured.metrics)
    check(value(f2, "visrec_featured_images_refused_total", reason="bad_image") == 1,
          "refused bad_image %s != 1" % value(f2, "visrec_featured_images_refused_total", reason="bad_image"))
    check(value(f2, "visrec_featured_images_embedded_total") == ITEMS, "a broken JPEG was embedded")
    check(requests(f2, "visrec.v1.Featured/PutItems", "OK") == calls + 1, "PutItems OK after the broken one")
    # rankd follows the feed: its lag falls to 0 at seq ITEMS.
    end = time.time() + 30
    while time.time() < end:
        r1 = scrape(rankd.metrics)
        if value(r1, "visrec_rankd_follower_seq", shard=featured.addr) == ITEMS:
            break
        time.sleep(0.1)
    check(value(r1, "visrec_rankd_follower_seq", shard=featured.addr) == ITEMS, "rankd's feed did not reach seq %d" % ITEMS)
    check(value(r1, "visrec_rankd_follower_connected", shard=featured.addr) == 1, "rankd's feed is not open")
    check(value(r1, "visrec_rankd_follower_lag_changes", shard=featured.addr) == 0, "rankd's feed lag is not 0")

    # rankd: failures on purpose, then its data.
    cli("recommend", "--user", "u00001", ok=False)            # no model: FAILED_PRECONDITION
    cli("recommend", "--user", "u00001", "--k", "5000", ok=False)  # INVALID_ARGUMENT
    cli("import", os.path.join(data, "interactions.csv"))
    r1 = scrape(rankd.metrics)
    check(value(r1, "visrec_rankd_interactions") == INTERACTIONS, "interactions")
    check(value(r1, "visrec_rankd_users") == USERS, "users")
    check(value(r1, "visrec_rankd_items") == ITEMS, "items")
    for m, c, want in (("Recommend", "FAILED_PRECONDITION", 1), ("Recommend", "INVALID_ARGUMENT", 1),
                       ("AddInteractions", "OK", 1)):
        got = requests(r1, "visrec.v1.Rank/" + m, c)
        check(got == want, "rankd %s %s: %s calls counted, %d made" % (m, c, got, want))

    # Train, scraped as it runs: long enough epochs to be seen.
    train = subprocess.Popen([VISREC, "--rankd", rankd.addr, "train", "--model", "bpr", "--epochs",
                              "12", "--patience", "100", "--triples-per-epoch", "3000000"],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "train.err"), "w"))
    during, n = scrape_while(train, rankd.metrics,
                             lambda f: value(f, "visrec_rankd_training") == 1)
    check(train.returncode == 0, "train failed: %s" % open(os.path.join(WORK, "train.err")).read()[-500:])
    print("train: %d scrapes, %d while it ran" % (n, len(during)))
    check(len(during) > 0, "no scrape saw visrec_rankd_training 1")
    epochs = [value(f, "visrec_rankd_train_epoch") for f in during]
    check(epochs == sorted(epochs), "the epoch went back during training: %s" % epochs)
    check(any(value(f, "visrec_rpc_in_flight", method="visrec.v1.Rank/Train") == 1 for f in during),
          "Train was never seen in flight")
    check(any(value(f, "visrec_rpc_stream_slots_in_use", pool="admin") == 1 for f in during),
          "Train never held an admin slot")
    for _ in range(5):
        cli("recommend", "--user", "u00001")
    for _ in range(3):
        cli("score", "--user", "nosuchuser", "i000001", ok=False)  # NOT_FOUND
    r2 = scrape(rankd.metrics)
    check(value(r2, "visrec_rankd_training") == 0, "training 0 after the run")
    check(value(r2, "visrec_rankd_train_epoch") == 12, "epoch 12 after the run")
    check(value(r2, "visrec_rankd_train_loss") > 0, "a loss")
    auc = value(r2, "visrec_rankd_train_validation_auc")
    check(auc is not None and 0.5 < auc <= 1, "validation AUC %s" % auc)
    check(value(r2, "visrec_rankd_train_triples_per_second") > 0, "triples/s")
    check(value(r2, "visrec_rankd_model_info", kind="BPR", version="1") == 1, "model_info BPR v1")
    check(requests(r2, "visrec.v1.Rank/Train", "OK") == 1, "one Train OK")
    check(requests(r2, "visrec.v1.Rank/Recommend", "OK") == 5, "five Recommend OK")
    check(requests(r2, "visrec.v1.Rank/Score", "NOT_FOUND") == 3, "three Score NOT_FOUND")
    check(value(r2, "visrec_rankd_follower_seq", shard=featured.addr) == ITEMS, "the follower applied every change")
    check(value(r2, "visrec_rankd_follower_lag_changes", shard=featured.addr) == 0, "follower lag 0")
    for fams, daemon in ((r2, "rankd"), (scrape(featured.metrics), "featured")):
        for method in {l["method"] for n, l, v in fams["visrec_rpc_duration_seconds"]["samples"]}:
            total = sum(v for n, l, v in fams["visrec_rpc_requests_total"]["samples"]
                        if l["method"] == method)
            count = value(fams, "visrec_rpc_duration_seconds_count", method=method)
            # featured's Info is called by rankd's scrapes too, between ours.
            if method != "visrec.v1.Featured/Info":
                check(total == count, "%s %s: %s requests but histogram count %s"
                      % (daemon, method, total, count))

    # The dashboard queries only what the daemons export.
    names = set(f1) | set(r2)
    dash = json.load(open(os.path.join(SRC, "deploy", "grafana", "visrec.json")))
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    exprs.append(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    check(len(exprs) >= 8, "the dashboard has only %d queries" % len(exprs))
    for e in exprs:
        for metric in re.findall(r"\bvisrec_[a-z0-9_]+", e):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            check(metric in names or base in names, "the dashboard queries %s, which no daemon exports"
                  % metric)

    # Idle, metrics on: at most 2% of a core each.
    time.sleep(0.5)
    c0 = featured.cpu_ms(), rankd.cpu_ms()
    time.sleep(5)
    c1 = featured.cpu_ms(), rankd.cpu_ms()
    print("idle 5 s with metrics on: featured %.0f ms, rankd %.0f ms CPU" % (c1[0] - c0[0], c1[1] - c0[1]))
    check(c1[0] - c0[0] <= 100 and c1[1] - c0[1] <= 100, "an idle daemon used CPU: %s -> %s" % (c0, c1))
finally:
    codes = [d.stop() for d in (rankd, featured) if d]
check(codes == [0, 0], "the daemons exited with %s" % codes)

# JSON logs: every line an object; call lines name the method and peer.
for d in (featured, rankd):
    with_call = 0
    lines = open(d.err_path, encoding="utf-8").read().splitlines()
    for i, line in enumerate(lines, 1):
        try:
            o = json.loads(line)
        except ValueError as e:
            check(False, "%s stderr line %d is not JSON (%s): %r" % (d.name, i, e, line[:200]))
            continue
        check(isinstance(o, dict) and all(isinstance(o.get(k), str) for k in
                                          ("ts", "level", "component", "msg")),
              "%s line %d lacks ts/level/component/msg: %r" % (d.name, i, line[:200]))
        if "method" in o:
            with_call += 1
            check(o.get("peer", "").startswith("ipv4:127.0.0.1:"),
                  "%s line %d: a call's line without its peer: %r" % (d.name, i, line[:200]))
    print("%s: %d JSON lines, %d about a call" % (d.name, len(lines), with_call))
    check(len(lines) > 3, "%s logged only %d lines" % (d.name, len(lines)))
    if d is rankd:  # --log-level debug logs every call
        check(with_call > 10, "rankd's debug lines about calls carry no method")

if failures:
    print("%d checks failed" % len(failures))
    sys.exit(1)
print("prom: all checks passed")
