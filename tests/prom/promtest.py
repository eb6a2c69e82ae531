"""What the tests of tests/prom share: a strict parser of the Prometheus
text exposition format, scraping, and daemons as processes."""
import math
import os
import re
import signal
import subprocess
import time
import urllib.request

# ---- the exposition format, strictly ---------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
VALUE = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)|[+-]Inf|NaN)"
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,%s)*)\})? (%s)$" % (NAME, LABEL, LABEL, VALUE))


def parse(text):
    """{family: {"type", "help", "samples": [(name, labels dict, value)]}};
    raises ValueError naming the first line that breaks the format."""
    fams = {}
    if not text.endswith("\n"):
        raise ValueError("the text does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            if not re.fullmatch(NAME, name) or name in fams:
                raise ValueError("line %d: bad or repeated HELP: %r" % (n, line))
            fams[name] = {"help": help_, "type": None, "samples": []}
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            if name not in fams or fams[name]["type"] or fams[name]["samples"]:
                raise ValueError("line %d: TYPE without its HELP first: %r" % (n, line))
            if typ not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise ValueError("line %d: unknown type %r" % (n, typ))
            fams[name]["type"] = typ
            continue
        if line.startswith("#") or not line:
            raise ValueError("line %d: stray %r" % (n, line))
        m = SAMPLE.match(line)
        if not m:
            raise ValueError("line %d: not a sample: %r" % (n, line))
        name = m.group(1)
        labels = dict(re.findall(LABEL, m.group(2) or ""))
        if len(labels) != len(re.findall(LABEL, m.group(2) or "")):
            raise ValueError("line %d: a label repeats: %r" % (n, line))
        value = float(m.group(m.lastindex))
        fam = name
        if name not in fams:
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in fams:
                    fam = name[: -len(suffix)]
        if fam not in fams or not fams[fam]["type"]:
            raise ValueError("line %d: sample of no HELP'd and TYPE'd family: %r" % (n, line))
        if fam != name and fams[fam]["type"] != "histogram":
            raise ValueError("line %d: suffixed sample of a %s: %r" % (n, fams[fam]["type"], line))
        if fams[fam]["type"] == "counter" and not name.endswith("_total"):
            raise ValueError("line %d: a counter whose name does not end in _total" % n)
        fams[fam]["samples"].append((name, labels, value))
    for fam, f in fams.items():
        if f["type"] != "histogram":
            continue
        series = {}
        for name, labels, value in f["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            s = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
            if name == fam + "_bucket":
                s["buckets"].append((float(labels["le"]), value))
            elif name == fam + "_count":
                s["count"] = value
            elif name == fam + "_sum":
                s["sum"] = value
        for key, s in series.items():
            b = s["buckets"]
            if not b or b[-1][0] != math.inf or s["count"] is None or s["sum"] is None:
                raise ValueError("%s%s: no +Inf bucket, _count or _sum" % (fam, key))
            if any(b[i][0] >= b[i + 1][0] or b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
                raise ValueError("%s%s: buckets not ascending and monotone" % (fam, key))
            if b[-1][1] != s["count"]:
                raise ValueError("%s%s: +Inf %g != _count %g" % (fam, key, b[-1][1], s["count"]))
    return fams


def value(fams, name, **labels):
    """The value of the sample name{labels} (None when absent)."""
    fam = name
    for suffix in ("_bucket", "_sum", "_count"):
        if name not in fams and name.endswith(suffix):
            fam = name[: -len(suffix)]
    for n, l, v in fams.get(fam, {}).get("samples", []):
        if n == name and l == labels:
            return v
    return None


def scrape(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    if not ctype.startswith("text/plain; version=0.0.4"):
        raise ValueError("Content-Type %r" % ctype)
    return parse(text)


# ---- daemons ------------------------------------------------------------------


class Daemon:
    """A daemon started with args, its stdout and stderr in work/NAME.out
    and .err; addr and metrics are read from its ready lines."""

    def __init__(self, name, args, work):
        self.name = name
        self.err_path = os.path.join(work, name + ".err")
        self.out_path = os.path.join(work, name + ".out")
        self.p = subprocess.Popen(
            args, stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"),
            stdin=subprocess.DEVNULL)
        self.addr = self.metrics = None
        end = time.time() + 30
        while time.time() < end and not self.metrics and self.p.poll() is None:
            time.sleep(0.05)
            for line in open(self.out_path):
                if line.startswith(name + " listening on "):
                    self.addr = line.split()[-1]
                if line.startswith(name + " metrics on "):
                    self.metrics = line.split()[-1]
        if not self.metrics:
            self.stop()
            raise RuntimeError("%s did not start: %s" % (name, open(self.err_path).read()[-2000:]))

    def cpu_ms(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode
