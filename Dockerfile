# syntax=docker/dockerfile:1
# Build: docker build -t sidecar-injector:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names the criterion bench: cargo reads that target even for a release build.
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
