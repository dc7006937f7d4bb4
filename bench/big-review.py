#!/usr/bin/env python3
"""Writes a large AdmissionReview: the fixture's Pod with N containers and a K KiB annotation.
Usage: big-review.py OUT [N=40] [KIB=200]"""
import copy
import json
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
kib = int(sys.argv[3]) if len(sys.argv) > 3 else 200
review = json.load(open("benches/fixtures/replicaset-review.json"))
pod = review["request"]["object"]
base = pod["spec"]["containers"][0]
pod["spec"]["containers"] = [dict(copy.deepcopy(base), name=f"worker-{i}") for i in range(n)]
pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "x" * (kib * 1024)
json.dump(review, open(out, "w"), separators=(",", ":"))
