# syntax=docker/dockerfile:1
# Build: docker build -t tollgate .
# Run:   docker run -p 4000:4000 -e OPENAI_API_KEY tollgate

FROM rust:1-slim-bookworm AS build
# jemalloc, the allocator, builds with make, which the slim image lacks.
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# The manifest names a benchmark target; a stub satisfies it for the dependency build.
RUN mkdir src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/routing.rs \
    && cargo build --release --locked --bin tollgate \
    && rm -rf src
COPY src ./src
# The built-in model catalog is compiled in from config/catalog.yaml.
COPY config ./config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tollgate \
    && mkdir -p /out/data

# distroless/cc: glibc and CA roots, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config/tollgate.yaml /app/config/tollgate.yaml
# The SQLite usage ledger lives here: mount a volume to keep it.
COPY --from=build --chown=65532:65532 /out/data /app/data
ENV TOLLGATE_CONFIG=/app/config/tollgate.yaml \
    TOLLGATE_LISTEN=0.0.0.0:4000 \
    TOLLGATE_DATA_DIR=/app/data
USER nonroot:nonroot
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tollgate", "healthcheck", "--addr", "127.0.0.1:4000"]
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
