# syntax=docker/dockerfile:1
# The postroad image: one binary for every role (`serve --roles ...`).
#   docker build -t postroad:0.1.0 .
# Build stage: the toolchain this repository is tested with; librdkafka is built from
# its bundled sources (the `rdkafka` crate), so only a C toolchain is needed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p postroad --bin postroad \
    && strip target/release/postroad

# Run stage: the binary, CA certificates for TLS to MX hosts and providers, and an
# unprivileged user whose uid the Kubernetes manifests run as.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/postroad --create-home postroad
COPY --from=build /src/target/release/postroad /usr/local/bin/postroad
USER 10001
WORKDIR /var/lib/postroad
# SMTP relay and submission (unprivileged: a Service maps 25 and 587), HTTP API, admin.
EXPOSE 2525 5870 8080 8025
ENTRYPOINT ["/usr/local/bin/postroad"]
CMD ["serve", "--config", "/etc/postroad/postroad.toml"]
