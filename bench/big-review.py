#!/usr/bin/env python3
"""Writes a large AdmissionReview: the fixture's Pod with N containers, a K KiB annotation,
and E env vars in each container (Istio's many_env_vars shape: N=1 K=0 E=2000).
Usage: big-review.py OUT [N=40] [KIB=200] [ENV=0]"""
import copy
import json
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
kib = int(sys.argv[3]) if len(sys.argv) > 3 else 200
env = int(sys.argv[4]) if len(sys.argv) > 4 else 0
review = json.load(open("benches/fixtures/replicaset-review.json"))
pod = review["request"]["object"]
base = pod["spec"]["containers"][0]
if env:
    base["env"] = [{"name": f"ENV_VAR_{i}", "value": f"value-{i}"} for i in range(env)]
pod["spec"]["containers"] = [dict(copy.deepcopy(base), name=f"worker-{i}") for i in range(n)]
if kib:
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "x" * (kib * 1024)
json.dump(review, open(out, "w"), separators=(",", ":"))
