#!/usr/bin/env python3
"""Checks deploy/k8s against the daemons it runs: every flag or VISREC_*
variable a manifest hands featured or rankd exists in that daemon's
--help (the built binaries are run), container ports, probes and Service
ports agree, every party gets the featured shard list from the one
ConfigMap and that list names exactly the featured StatefulSet's pods,
VISREC_SHARD_SELF names the pod itself, tokens come from the required
Secret as files, and the replicas point at the writer's stable name.

usage: test_manifests.py K8S_DIR FEATURED_BIN RANKD_BIN
Exits 0 when all agree, 1 naming each disagreement."""
import glob
import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("skipped: python3-yaml is not installed (deploy/install-deps.sh --test)")
    sys.exit(77)

problems = []


def bad(msg):
    problems.append(msg)


def help_of(binary):
    """The flags and environment variables binary --help lists."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    flags = set(re.findall(r"^\s+--([a-z0-9-]+)", text, re.M))
    envs = set(re.findall(r"\[env (VISREC_[A-Z0-9_]+)\]", text))
    if not flags or not envs:
        sys.exit(f"{binary} --help listed no flags or variables:\n{text}")
    return flags, envs


def load(k8s):
    docs = []
    for path in sorted(glob.glob(os.path.join(k8s, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    d["_file"] = os.path.basename(path)
                    docs.append(d)
    return docs


def named(d):
    return f'{d["_file"]}: {d["kind"]} {d["metadata"]["name"]}'


def main():
    k8s, featured_bin, rankd_bin = sys.argv[1:4]
    known = {"featured": help_of(featured_bin), "rankd": help_of(rankd_bin)}
    docs = load(k8s)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    services = by_kind.get("Service", [])
    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    shard_list = None
    shard_cm = configmaps.get("visrec-shards")
    if not shard_cm or "shards" not in shard_cm.get("data", {}):
        bad("no ConfigMap visrec-shards with key shards (the featured shard list)")
    else:
        shard_list = shard_cm["data"]["shards"]

    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        sel = w["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            bad(f"{named(w)}: selector {sel} does not match the pod labels {labels}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
        for c in spec["containers"]:
            daemon = c["command"][0]
            if daemon not in known:
                bad(f"{named(w)}: runs {daemon}, not featured or rankd")
                continue
            flags, envs = known[daemon]
            for a in c.get("args", []) + c["command"][1:]:
                m = re.match(r"--([a-z0-9-]+)", a)
                if m and m.group(1) not in flags:
                    bad(f"{named(w)}: {daemon} has no flag --{m.group(1)} (not in {daemon} --help)")
            env = {}
            for e in c.get("env", []):
                env[e["name"]] = e
                if e["name"].startswith("VISREC_") and e["name"] not in envs:
                    bad(f"{named(w)}: {daemon} knows no variable {e['name']} (not in {daemon} --help)")
            for e in env.values():
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                    bad(f"{named(w)}: {e['name']} takes a secret through the environment; mount it as a file")
            # Ports: the listen port is the container's grpc port; probes use it.
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            listen = env.get("VISREC_LISTEN", {}).get("value", "")
            if not listen.endswith(f':{ports.get("grpc")}'):
                bad(f"{named(w)}: VISREC_LISTEN {listen!r} is not the grpc port {ports.get('grpc')}")
            if not listen.startswith("0.0.0.0:"):
                bad(f"{named(w)}: VISREC_LISTEN {listen!r} does not listen beyond loopback")
            metrics = env.get("VISREC_METRICS_LISTEN", {}).get("value")
            if metrics and not metrics.endswith(f':{ports.get("metrics")}'):
                bad(f"{named(w)}: VISREC_METRICS_LISTEN {metrics!r} is not the metrics port")
            ann = w["spec"]["template"]["metadata"].get("annotations", {})
            if metrics and ann.get("prometheus.io/port") != str(ports.get("metrics")):
                bad(f"{named(w)}: prometheus.io/port is not the metrics port {ports.get('metrics')}")
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    bad(f"{named(w)}: no {probe}")
                elif p.get("grpc", {}).get("port") != ports.get("grpc"):
                    bad(f"{named(w)}: {probe} does not probe gRPC health on port {ports.get('grpc')}")
            # Tokens: a file from the required Secret.
            tok = env.get("VISREC_ADMIN_TOKEN_FILE", {}).get("value")
            if not tok:
                bad(f"{named(w)}: no VISREC_ADMIN_TOKEN_FILE: the daemon listens beyond loopback")
            for name, e in env.items():
                if name.endswith("_TOKEN_FILE"):
                    mount = [m for m in c.get("volumeMounts", []) if e["value"].startswith(m["mountPath"] + "/")]
                    vol = volumes.get(mount[0]["name"]) if mount else None
                    if not vol or "secret" not in vol or vol["secret"].get("optional"):
                        bad(f"{named(w)}: {name} {e['value']} is not in a mounted, required Secret")
                    elif os.path.basename(e["value"]) not in [i["path"] for i in vol["secret"].get("items", [])]:
                        bad(f"{named(w)}: {name} {e['value']} is not one of the Secret's items")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    bad(f"{named(w)}: mounts {m['name']}, which is no volume")
            if "requests" not in c.get("resources", {}):
                bad(f"{named(w)}: no resource requests")
            # The shard list: from the one ConfigMap, for every party. rankd
            # reads it as a file of the ConfigMap mounted as a volume (which
            # the kubelet updates in place, and rankd re-reads: README), so a
            # new list reaches it without a restart.
            if daemon == "rankd":
                path = env.get("VISREC_FEATURED_FILE", {}).get("value", "")
                mount = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")]
                vol = volumes.get(mount[0]["name"]) if mount else None
                cm = (vol or {}).get("configMap", {})
                items = {i["path"]: i["key"] for i in cm.get("items", [])}
                key_ok = items.get(os.path.basename(path), os.path.basename(path) if not items else None)
                if "VISREC_FEATURED" in env:
                    bad(f"{named(w)}: VISREC_FEATURED is set: an environment variable never changes in a "
                        "running pod; give rankd the list as VISREC_FEATURED_FILE")
                if not path or cm.get("name") != "visrec-shards" or key_ok != "shards":
                    bad(f"{named(w)}: VISREC_FEATURED_FILE {path!r} is not key shards of the mounted "
                        "ConfigMap visrec-shards")
                elif mount[0].get("subPath"):
                    bad(f"{named(w)}: the shard list is mounted with subPath, which the kubelet never updates")
            else:
                ref = env.get("VISREC_SHARDS", {}).get("valueFrom", {}).get("configMapKeyRef")
                if ref != {"name": "visrec-shards", "key": "shards"}:
                    bad(f"{named(w)}: VISREC_SHARDS does not come from ConfigMap visrec-shards key shards")
            if daemon == "featured":
                check_featured(w, c, env, shard_list, services)
            if daemon == "rankd" and "VISREC_WRITER" in env:
                check_replica(env, workloads, services)

    for s in services:
        sel = s["spec"].get("selector", {})
        targets = [w for w in workloads
                   if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not targets:
            bad(f"{named(s)}: selects no pods")
        for sp in s["spec"]["ports"]:
            for w in targets:
                cports = {p["name"]: p["containerPort"]
                          for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                want = sp.get("targetPort", sp["port"])
                if cports.get(sp["name"]) != want:
                    bad(f"{named(s)}: port {sp['name']} {want} is not {named(w)}'s ({cports.get(sp['name'])})")

    replica_deploys = [w for w in workloads if w["kind"] == "Deployment"]
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    for w in replica_deploys:
        if not any(h["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"] for h in hpas):
            bad(f"{named(w)}: no HorizontalPodAutoscaler scales it")
        sel = w["spec"]["template"]["metadata"]["labels"]
        if not any(s["spec"].get("clusterIP") == "None" and
                   all(sel.get(k) == v for k, v in s["spec"]["selector"].items()) for s in services):
            bad(f"{named(w)}: no headless Service for client-side round robin")

    for p in problems:
        print("FAIL", p)
    if not problems:
        print(f"ok: {len(docs)} objects in {k8s} agree with featured and rankd")
    return 1 if problems else 0


def check_featured(w, c, env, shard_list, services):
    if w["kind"] != "StatefulSet":
        bad(f"{named(w)}: featured shards must be a StatefulSet (the ordinal gives the shard)")
        return
    n, svc = w["spec"]["replicas"], w["spec"]["serviceName"]
    name = w["metadata"]["name"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
    pods = [f"{name}-{k}.{svc}:{port}" for k in range(n)]
    if shard_list is not None and shard_list.split(",") != pods:
        bad(f"{named(w)}: the shard list {shard_list!r} is not its {n} pods {','.join(pods)!r}")
    self_ = env.get("VISREC_SHARD_SELF", {}).get("value")
    pod_name = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if pod_name != "metadata.name" or self_ != f"$(POD_NAME).{svc}:{port}":
        bad(f"{named(w)}: VISREC_SHARD_SELF is not the pod's own name from the downward API")
    if "nvidia.com/gpu" not in c["resources"].get("limits", {}):
        bad(f"{named(w)}: featured asks for no nvidia.com/gpu")
    if not any(s["metadata"]["name"] == svc and s["spec"].get("clusterIP") == "None" for s in services):
        bad(f"{named(w)}: serviceName {svc} is no headless Service (the pods' DNS names)")


def check_replica(env, workloads, services):
    writer = env["VISREC_WRITER"].get("value", "")
    ok = False
    for w in workloads:
        if w["kind"] != "StatefulSet" or w["spec"]["replicas"] != 1:
            continue
        c = w["spec"]["template"]["spec"]["containers"][0]
        if c["command"][0] != "rankd" or any(e["name"] == "VISREC_WRITER" for e in c.get("env", [])):
            continue
        port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
        ok |= writer == f'{w["metadata"]["name"]}-0.{w["spec"]["serviceName"]}:{port}'
    if not ok:
        bad(f"rankd replica: VISREC_WRITER {writer!r} is not the writer StatefulSet's pod 0")


if __name__ == "__main__":
    sys.exit(main())
