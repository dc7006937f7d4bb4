# Sourced by tests/image/run: the arm64 image's binary, run under qemu-aarch64-static (Debian's
# qemu-user-static, called directly: no binfmt registration), against the amd64 image's.
# Uses run's pod, check, free_port, in_image, run_flags, hardened, work and image.

command -v qemu-aarch64-static >/dev/null || { echo "qemu-aarch64-static is missing: apt-get install qemu-user-static" >&2; exit 1; }
arm_root=$(pod image mount "$image-arm64")
unmount_arm() { pod image unmount "$image-arm64" >/dev/null 2>&1 || true; }
arm() { qemu-aarch64-static -L "$arm_root" "$arm_root/usr/local/bin/sidecar-injector" "$@"; }

# e_machine of the ELF header: 183 is AArch64, 62 x86-64.
elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }
check "the arm64 image's binary is an AArch64 executable" eval '[ "$(elf_machine "$arm_root/usr/local/bin/sidecar-injector")" = 183 ]'
check "the arm64 image's libraries are AArch64 ones, with no x86-64 loader" \
  eval '[ -e "$arm_root/lib/ld-linux-aarch64.so.1" ] && [ ! -e "$arm_root/lib/x86_64-linux-gnu" ] && [ ! -e "$arm_root/lib64/ld-linux-x86-64.so.2" ]'
arm_version() { local out; out=$(arm --version) && [ "$out" = "$(in_image "$image-amd64" --version)" ]; }
check "arm64 under qemu: --version, as amd64 says it" arm_version
conformance=tests/conformance/mirror-and-jobs
check "arm64 under qemu: validate loads a ConfigMap" arm validate --config "$conformance/configmap.yaml"

# The conformance case that moves every injected image under imageRepository, as the
# AdmissionReview kube-apiserver sends.
python3 - "$conformance/01-images-under-repository.yaml" >"$work/review.json" <<'EOF'
import json, sys, yaml
case = yaml.safe_load(open(sys.argv[1]))
pod = case["object"]
pod["metadata"]["namespace"] = case["namespace"]
gvk = {"group": "", "version": "v1", "kind": "Pod"}
gvr = {"group": "", "version": "v1", "resource": "pods"}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "image-arm64", "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
    "namespace": case["namespace"], "operation": "CREATE", "object": pod, "dryRun": False}}))
EOF
amd_port=$(free_port)
pod run -d --name si-amd64 "${run_flags[@]}" "${hardened[@]}" -p "127.0.0.1:$amd_port:8443" \
  -v "$work/tls:/etc/sidecar-injector/tls:ro" -v "$root/$conformance/configmap.yaml:/etc/sidecar-injector/configmap.yaml:ro" \
  "$image-amd64" serve --config /etc/sidecar-injector/configmap.yaml --tls-cert-file=/etc/sidecar-injector/tls/tls.crt \
  --tls-key-file=/etc/sidecar-injector/tls/tls.key >/dev/null
arm_port=$(free_port)
arm_metrics=$(free_port)
qemu-aarch64-static -L "$arm_root" "$arm_root/usr/local/bin/sidecar-injector" serve --config "$conformance/configmap.yaml" --listen "127.0.0.1:$arm_port" --metrics-listen "127.0.0.1:$arm_metrics" \
  --tls-cert-file "$work/tls/tls.crt" --tls-key-file "$work/tls/tls.key" >"$work/arm-serve.log" 2>&1 &
arm_pid=$!
unmount_arm() { kill "$arm_pid" 2>/dev/null || true; pod image unmount "$image-arm64" >/dev/null 2>&1 || true; }
answer() { # PORT FILE: the /mutate answer to the review, once the server is ready
  for _ in $(seq 150); do
    curl -sf --cacert "$work/tls/ca.crt" "https://127.0.0.1:$1/readyz" >/dev/null && break
    sleep 0.2
  done
  curl -sf --cacert "$work/tls/ca.crt" -H 'Content-Type: application/json' --data @"$work/review.json" \
    "https://127.0.0.1:$1/mutate" >"$2"
}
same_patch() {
  answer "$amd_port" "$work/amd64.answer" || { echo "     amd64: no answer"; pod logs si-amd64 | tail -5; return 1; }
  answer "$arm_port" "$work/arm64.answer" || { echo "     arm64: no answer"; tail -5 "$work/arm-serve.log"; return 1; }
  python3 - "$work/amd64.answer" "$work/arm64.answer" <<'EOF' || return 1
import base64, json, sys
amd, arm = (open(p, "rb").read() for p in sys.argv[1:])
patch = base64.b64decode(json.loads(amd)["response"]["patch"])
ops = json.loads(patch)
print(f"     amd64 and arm64: {len(amd)}-byte answers, a {len(patch)}-byte patch of {len(ops)} operations")
assert any("registry.corp.example:5000/mirror/" in json.dumps(op) for op in ops), "no image under the repository"
EOF
  cmp -s "$work/amd64.answer" "$work/arm64.answer"
}
check "arm64 under qemu: /mutate answers the conformance review byte for byte as amd64" same_patch
kill "$arm_pid" 2>/dev/null || true
wait "$arm_pid" 2>/dev/null || true
pod rm -f -t 0 si-amd64 >/dev/null 2>&1 || true
