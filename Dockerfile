# syntax=docker/dockerfile:1
# One image for linux/amd64 and linux/arm64. The Rust build runs on the build platform and
# cross-compiles (no emulated compiler); only the last stage is of the target platform.
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/sidecar-injector:0.1.0 --push .
#   podman build --platform linux/arm64 --build-arg BUILDPLATFORM=linux/amd64 --build-arg BUILDARCH=amd64 \
#     --build-arg TARGETPLATFORM=linux/arm64 --build-arg TARGETARCH=arm64 -t …-arm64 .   (tests/image/run)
# buildx sets BUILDPLATFORM, BUILDARCH, TARGETPLATFORM and TARGETARCH itself; podman 4 needs
# them given. The last stage names its platform: podman 4 would otherwise give it the build
# stage's (amd64 libraries under an image labelled arm64).
# The Rust version is pinned: a new Rust is a change of this line, reviewed like any other.
ARG RUST_VERSION=1.95
ARG TARGETPLATFORM
FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
WORKDIR /src
# The Rust target of TARGETARCH, its standard library, and, when it is not the build
# platform's, Debian's cross gcc (the linker, and the C compiler of ring's assembly).
RUN set -eu; \
    case "${TARGETARCH:-}" in \
      amd64) target=x86_64-unknown-linux-gnu; gcc=gcc-x86-64-linux-gnu; cc=x86_64-linux-gnu-gcc ;; \
      arm64) target=aarch64-unknown-linux-gnu; gcc=gcc-aarch64-linux-gnu; cc=aarch64-linux-gnu-gcc ;; \
      *) echo "TARGETARCH='$TARGETARCH': this image is built for amd64 and arm64" >&2; exit 1 ;; \
    esac; \
    echo "$target" >/rust-target; \
    if [ "$TARGETARCH" != "${BUILDARCH:?BUILDARCH is not set: pass --build-arg BUILDARCH}" ]; then \
      apt-get update -qq \
      && apt-get install -y -qq --no-install-recommends "$gcc" "libc6-dev-$TARGETARCH-cross" >/dev/null \
      && rm -rf /var/lib/apt/lists/*; \
      printf '[target.%s]\nlinker = "%s"\n' "$target" "$cc" >>"$CARGO_HOME/config.toml"; \
    fi; \
    rustup target add "$target"
# Stripped by the linker, whatever the target (no host strip that cannot read arm64).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
# The dependencies first, in a layer of their own (keyed by Cargo.toml and Cargo.lock): an
# edit of the sources rebuilds only this crate. The stubs stand in for the crate's targets
# (cargo reads every target Cargo.toml names, the criterion bench included).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/engine.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" \
 && rm -rf src benches target/*/release/sidecar-injector* target/*/release/deps/sidecar_injector-* \
      target/*/release/deps/libsidecar_injector-* target/*/release/.fingerprint/sidecar-injector-*
COPY src ./src
COPY benches ./benches
COPY manifests ./manifests
RUN cargo build --release --locked --target "$(cat /rust-target)" \
 && cp "target/$(cat /rust-target)/release/sidecar-injector" /sidecar-injector

# distroless: no shell, no package manager; "nonroot" is uid 65532, as the Deployment expects.
FROM --platform=$TARGETPLATFORM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sidecar-injector /usr/local/bin/sidecar-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/sidecar-injector"]
CMD ["serve"]
