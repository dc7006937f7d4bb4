# syntax=docker/dockerfile:1
# Build: docker build -t sidecar-injector:0.1.0 .   (tests/image/run builds it with podman)
# The Rust version is pinned: a new Rust is a change of this line, reviewed like any other.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The dependencies first, in a layer of their own (keyed by Cargo.toml and Cargo.lock): an
# edit of the sources rebuilds only this crate. The stubs stand in for the crate's targets
# (cargo reads every target Cargo.toml names, the criterion bench included).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/engine.rs \
 && cargo build --release --locked \
 && rm -rf src benches target/release/sidecar-injector* target/release/deps/sidecar_injector-* \
      target/release/deps/libsidecar_injector-* target/release/.fingerprint/sidecar-injector-*
COPY src ./src
COPY benches ./benches
COPY manifests ./manifests
RUN cargo build --release --locked && strip target/release/sidecar-injector

# distroless: no shell, no package manager; "nonroot" is uid 65532, as the Deployment expects.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sidecar-injector /usr/local/bin/sidecar-injector
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/sidecar-injector"]
CMD ["serve"]
