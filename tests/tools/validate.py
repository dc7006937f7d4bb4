#!/usr/bin/env python3
"""Validates every document of the given YAML files against the official Kubernetes schema.

Usage: validate.py [--version 1.33.0] [--skip-kind KIND]... FILE...
Prints one line per problem and 'N passed, N failed' (documents); exits 1 on any failure.
Kinds not in the Kubernetes schema (e.g. OpenShift's DeploymentConfig) are reported as skipped.
"""
import argparse
import sys

import kubernetes_validate
import yaml


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="1.33.0")
    ap.add_argument("--skip-kind", action="append", default=[])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    passed = failed = skipped = 0
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        # A List has no schema of its own: its items are the documents to check.
        docs = [item for d in docs for item in (d.get("items") or [] if isinstance(d, dict) and d.get("kind") == "List" else [d])]
        for i, doc in enumerate(docs):
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind in args.skip_kind:
                skipped += 1
                continue
            try:
                kubernetes_validate.validate(doc, args.version, strict=True)
                passed += 1
            except kubernetes_validate.SchemaNotFoundError:
                skipped += 1
                print(f"{path}: document {i + 1} ({kind}): skipped, no schema for it")
            except Exception as e:  # ValidationError and friends: report, keep going
                failed += 1
                print(f"{path}: document {i + 1} ({kind}): {type(e).__name__}: {str(e)[:300]}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
