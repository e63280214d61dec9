# syntax=docker/dockerfile:1
# Multi-stage build of the quantd binary. No target-cpu flags: the binary is built for the
# baseline x86-64 (or aarch64) CPU and picks AVX2 / AVX-512 / NEON kernels at run time.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits do not rebuild them. Every [[bench]] of Cargo.toml
# needs a placeholder, or cargo refuses the manifest (tests/api/container.rs runs this step).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml); do \
         echo 'fn main() {}' > "benches/$bench.rs"; done \
    && cargo build --release --locked \
    && rm -rf src benches
COPY migrations ./migrations
COPY src ./src
COPY benches ./benches
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin quantd

FROM debian:bookworm-slim AS runtime
# Unpinned on purpose: bookworm-slim only moves by security updates, which we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/quantd --create-home quantd
COPY --from=build /src/target/release/quantd /usr/local/bin/quantd
USER 10001
WORKDIR /var/lib/quantd
ENV QUANTD_BIND=0.0.0.0:8080 \
    QUANTD_DATA_DIR=/var/lib/quantd/data \
    QUANTD_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/quantd/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["quantd"]
CMD ["serve"]
