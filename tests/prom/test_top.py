#!/usr/bin/python3
"""`visrec top` in a real terminal: tmux runs it against featured and rankd
(--metrics-listen on loopback) while the CLI makes Recommend and Score
calls; the captured pane must show both daemons, the methods called with a
non-zero calls/s, and rankd's model; then q must end it with the terminal
restored (the main screen back: the shell's prompt line is visible again),
and so must Ctrl-C.
--once is checked too: one frame on stdout, exit 0, and exit 1 when no
daemon answers. Exits 77 (skipped) without tmux.

  test_top.py BUILD_DIR WORK_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from promtest import Daemon  # noqa: E402

BUILD, WORK = sys.argv[1], sys.argv[2]
VISREC = os.path.join(BUILD, "tools", "visrec")
TMUX = shutil.which("tmux")
if not TMUX:
    print("skipped: tmux is not installed (deploy/install-deps.sh --test installs it)")
    sys.exit(77)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def tmux(*args, check=True):
    return subprocess.run([TMUX, "-L", sock] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30, check=check)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
sock = "visrec-top-%d" % os.getpid()  # a tmux server of this test's own
data = os.path.join(WORK, "data")
subprocess.run([VISREC, "datagen", "--out", data, "--users", "40", "--items", "60",
                "--interactions", "600", "--image-min", "32", "--image-max", "48"],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
featured = Daemon("featured", [os.path.join(BUILD, "featured", "featured"), "--data",
                               os.path.join(WORK, "fd"), "--listen", "127.0.0.1:0",
                               "--metrics-listen", "127.0.0.1:0"], WORK)
rankd = None
try:
    rankd = Daemon("rankd", [os.path.join(BUILD, "rankd", "rankd"), "--data", os.path.join(WORK, "rk"),
                             "--listen", "127.0.0.1:0", "--featured", featured.addr,
                             "--metrics-listen", "127.0.0.1:0"], WORK)

    def cli(*args, ok=True):
        r = subprocess.run([VISREC, "--featured", featured.addr, "--rankd", rankd.addr] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        if ok and r.returncode:
            raise RuntimeError("visrec %s: %s" % (" ".join(args), r.stderr))

    cli("ingest", data)
    cli("import", os.path.join(data, "interactions.csv"))
    cli("train", "--model", "bpr", "--epochs", "3")

    top = [VISREC, "top", "--featured-metrics", featured.metrics, "--rankd-metrics", rankd.metrics]
    # --once: one frame on stdout.
    r = subprocess.run(top + ["--once", "--interval", "0.3"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    check(r.returncode == 0, "top --once exited %d: %s" % (r.returncode, r.stderr))
    check("\x1b" not in r.stdout, "top --once wrote escape sequences")
    check("featured %s" % featured.metrics in r.stdout and "rankd %s" % rankd.metrics in r.stdout,
          "top --once does not show both daemons:\n" + r.stdout)
    r = subprocess.run([VISREC, "top", "--featured-metrics", "127.0.0.1:1", "--once", "--interval",
                        "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    check(r.returncode == 1 and "DOWN" in r.stdout, "top --once against nothing: %d %r"
          % (r.returncode, r.stdout))

    # Live, in a detached tmux session running a shell, so that the
    # screen top leaves behind can be read after it quits.
    tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "40", "bash --norc --noprofile")
    tmux("send-keys", "-t", "top", "PS1='prompt> '; clear", "Enter")
    tmux("send-keys", "-t", "top", " ".join(top) + "; echo top-exited-$?", "Enter")
    end = time.time() + 6
    while time.time() < end:  # calls for a few seconds, so rates show
        cli("recommend", "--user", "u00001")
        cli("score", "--user", "nosuchuser", "i000001", ok=False)
    pane = tmux("capture-pane", "-p", "-t", "top").stdout
    print(pane)
    rows = {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^\s+(Rank/\w+)\s+([0-9.]+)\s", pane, re.M)}
    check(rows.get("Rank/Recommend", 0) > 0, "no Recommend calls/s in the pane")
    check(rows.get("Rank/Score", 0) > 0, "no Score calls/s in the pane")
    check(re.search(r"^\s+Rank/Score\s+[0-9.]+\s+[1-9][0-9.]*\s", pane, re.M) is not None,
          "Score's errors/s are not shown non-zero")
    check("Featured/PutItems" in pane, "featured's PutItems is not listed")
    check("model BPR v1" in pane, "rankd's model is not shown")
    tmux("send-keys", "-t", "top", "q")
    end = time.time() + 10
    pane = ""
    while time.time() < end and "top-exited-" not in pane:
        time.sleep(0.2)
        pane = tmux("capture-pane", "-p", "-t", "top").stdout
    check("top-exited-0" in pane, "top did not exit 0 on q:\n" + pane)
    check("prompt> " in pane and "METHOD" not in pane,
          "the main screen was not restored after q:\n" + pane)
    # Ctrl-C (SIGINT) ends it the same way.
    tmux("send-keys", "-t", "top", "clear; " + " ".join(top) + "; echo top-ended-$?", "Enter")
    time.sleep(2)
    tmux("send-keys", "-t", "top", "C-c")
    end = time.time() + 10
    pane = ""
    while time.time() < end and "top-ended-" not in pane:
        time.sleep(0.2)
        pane = tmux("capture-pane", "-p", "-t", "top").stdout
    check("top-ended-0" in pane and "METHOD" not in pane,
          "top did not end cleanly on SIGINT:\n" + pane)
finally:
    tmux("kill-server", check=False)
    codes = [d.stop() for d in (rankd, featured) if d]
check(codes == [0, 0], "the daemons exited with %s" % codes)
if failures:
    print("%d checks failed" % len(failures))
    sys.exit(1)
print("top: all checks passed")
