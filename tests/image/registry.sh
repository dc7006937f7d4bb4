# Sourced by tests/image/run: a private registry on loopback (Debian's docker-registry, the
# CNCF distribution registry) with TLS from the CA `certs` made and htpasswd auth. The index
# goes in with `podman manifest push --all` and comes back with `skopeo inspect --raw`; then
# docs/install.md's mirror recipe runs against it. Uses run's pod, check, free_port, arm,
# work, root, image and platforms.

for tool in docker-registry skopeo htpasswd; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install docker-registry skopeo apache2-utils" >&2; exit 1; }
done
reg=$work/registry
mkdir -p "$reg/data" "$reg/certs"
cp "$work/tls/ca.crt" "$reg/certs/ca.crt" # a --cert-dir holding only the CA
user=e2e
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
htpasswd -Bbc "$reg/htpasswd" "$user" "$password" 2>/dev/null
reg_port=$(free_port)
registry=127.0.0.1:$reg_port
cat >"$reg/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $reg/data}
http:
  addr: $registry
  tls: {certificate: $work/tls/tls.crt, key: $work/tls/tls.key}
auth:
  htpasswd: {realm: sidecar-injector-image-test, path: $reg/htpasswd}
EOF
docker-registry serve "$reg/config.yml" >"$reg/log" 2>&1 &
registry_pid=$!
stop_registry() { kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; }
for _ in $(seq 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$reg/certs/ca.crt" "https://$registry/v2/")" = 401 ] && break
  sleep 0.2
done
creds=(--creds "$user:$password")
certs=(--cert-dir "$reg/certs")
pushed=$registry/sidecar-injector:0.1.0

push() { pod manifest push --all --format oci "${certs[@]}" "${creds[@]}" "$image" "docker://$pushed" >"$reg/push.log" 2>&1 || { tail -5 "$reg/push.log"; return 1; }; }
check "the index is pushed to a registry with TLS and auth (podman manifest push --all)" push
read_back() {
  local raw out
  raw=$(skopeo inspect --raw "${certs[@]}" "${creds[@]}" "docker://$pushed") || return 1
  out=$(platforms <<<"$raw")
  echo "     $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["mediaType"])' "$raw"): $(tr '\n' ' ' <<<"$out")"
  [ "$out" = "$both" ]
}
check "skopeo inspect --raw reads back one index of linux/amd64 and linux/arm64" read_back
refused() { local out; ! out=$(skopeo inspect --raw "${certs[@]}" --no-creds "docker://$pushed" 2>&1) && grep -qi 'unauthorized\|authentication required' <<<"$out"; }
check "the registry refuses a read without credentials" refused
pulled_arm() {
  local mnt ok=1
  pod pull --arch arm64 "${certs[@]}" "${creds[@]}" "docker://$pushed" >/dev/null 2>&1 || return 1
  [ "$(pod image inspect --format '{{.Architecture}}' "$pushed")" = arm64 ] || return 1
  mnt=$(pod image mount "$pushed") || return 1
  qemu-aarch64-static -L "$mnt" "$mnt/usr/local/bin/sidecar-injector" --version | grep -q '^sidecar-injector ' && ok=0
  pod image unmount "$pushed" >/dev/null 2>&1
  pod rmi -f "$pushed" >/dev/null 2>&1
  return $ok
}
check "its arm64 variant, pulled from the registry, runs under qemu" pulled_arm
# The digest docs/install.md gives for image.digest: the index's own, which pins both platforms.
pinned() {
  local raw_digest digest
  raw_digest=sha256:$(skopeo inspect --raw "${certs[@]}" "${creds[@]}" "docker://$pushed" | sha256sum | cut -d' ' -f1)
  digest=$(skopeo inspect --format '{{.Digest}}' "${certs[@]}" "${creds[@]}" "docker://$pushed") || return 1
  echo "     sha256sum of the raw index: $raw_digest; skopeo inspect's Digest: $digest"
  [ "$raw_digest" = "$digest" ] || return 1
  skopeo inspect --raw "${certs[@]}" "${creds[@]}" "docker://${pushed%:*}@$digest" | platforms | cmp -s - <(echo "$both")
}
check "the index's digest, as docs/install.md reads it, names the index of both platforms" pinned

# docs/install.md's recipe. Nothing here reaches docker.io or the APM vendor's registry, so
# a registries.conf points them at stand-ins on this registry (upstream/…): multi-arch
# images of a few bytes under the templates' exact names. The recipe itself runs as written,
# with this registry's CA and login.
example=examples/configmaps/collector-and-apm.yaml
mkdir -p "$reg/standin"
cat >"$reg/registries.conf" <<EOF
[[registry]]
prefix = "docker.io"
location = "$registry/upstream/docker.io"
[[registry]]
prefix = "apm-vendor.example.com"
location = "$registry/upstream/apm-vendor.example.com"
EOF
standin() { # IMAGE: a two-platform stand-in pushed where the registries.conf sends IMAGE
  local name=$1 list=localhost/standin:mirror arch
  local first=${name%%/*}
  # As a node reads a name: a first part with no dot, colon or localhost is Docker Hub's.
  if [ "$first" = "$name" ]; then
    name=docker.io/library/$name
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    name=docker.io/$name
  fi
  pod manifest rm "$list" >/dev/null 2>&1 || true
  pod manifest create "$list" >/dev/null
  for arch in amd64 arm64; do
    # One file that names the platform, so that the two images differ (identical images
    # would be one digest, and the index one platform).
    printf '%s for linux/%s\n' "$1" "$arch" >"$reg/standin/platform"
    tar -C "$reg/standin" -cf "$reg/standin.tar" platform
    pod import --os linux --arch "$arch" "$reg/standin.tar" "localhost/standin:$arch" >/dev/null 2>&1 || return 1
    pod manifest add "$list" "containers-storage:localhost/standin:$arch" >/dev/null || return 1
  done
  pod manifest push --all "${certs[@]}" "${creds[@]}" "$list" "docker://$registry/upstream/$name" >/dev/null 2>&1
}
bin=$(mktemp -d)
cleanup_mirror() { rm -rf "$bin"; }
pod create --name si-bin "$image-amd64" >/dev/null && pod cp si-bin:/usr/local/bin/sidecar-injector "$bin/" && pod rm si-bin >/dev/null
mirror_recipe() {
  local source mirror n=0 out
  "$bin/sidecar-injector" images --config "$example" --injector-image "$pushed" >"$reg/images.txt" 2>/dev/null || return 1
  while read -r source _; do
    [ "$source" = "$pushed" ] || standin "$source" || { echo "     no stand-in for $source"; return 1; }
  done < <("$bin/sidecar-injector" images --config "$example" --mirror-to "$registry/mirror" 2>/dev/null)
  export REGISTRY_AUTH_FILE=$reg/auth.json
  skopeo login "${certs[@]}" -u "$user" -p "$password" "$registry" >/dev/null 2>&1 || return 1
  # The recipe (docs/install.md), plus this registry's CA and the stand-ins' registries.conf.
  "$bin/sidecar-injector" images --config "$example" --injector-image "$pushed" --mirror-to "$registry/mirror" \
    >"$reg/pairs.txt" 2>/dev/null || return 1
  while read -r source mirror; do
    skopeo --registries-conf "$reg/registries.conf" copy --all --src-cert-dir "$reg/certs" --dest-cert-dir "$reg/certs" \
      "docker://$source" "docker://$mirror" >>"$reg/copy.log" 2>&1 || { tail -3 "$reg/copy.log"; return 1; }
  done <"$reg/pairs.txt"
  # Every image listed is in the mirror, with both platforms, under the name imageRepository
  # gives it.
  while read -r source mirror; do
    out=$(skopeo inspect --raw "${certs[@]}" "docker://$mirror" | platforms) || return 1
    [ "$out" = "$both" ] || { echo "     $mirror: $(tr '\n' ' ' <<<"$out")"; return 1; }
    n=$((n + 1))
  done <"$reg/pairs.txt"
  unset REGISTRY_AUTH_FILE
  echo "     $n of $(wc -l <"$reg/images.txt") images mirrored, each with linux/amd64 and linux/arm64"
  [ "$n" = "$(wc -l <"$reg/images.txt")" ] && [ "$n" -ge 3 ]
}
check "the mirror recipe copies every image sidecar-injector images lists, with all architectures" mirror_recipe
cleanup_mirror
stop_registry
