# syntax=docker/dockerfile:1
# Build: docker build -t tollgate .
# Run:   docker run -p 4000:4000 -e OPENAI_API_KEY tollgate

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin tollgate \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tollgate

# distroless/cc: glibc and CA roots, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config/tollgate.yaml /app/config/tollgate.yaml
ENV TOLLGATE_CONFIG=/app/config/tollgate.yaml \
    TOLLGATE_LISTEN=0.0.0.0:4000
USER nonroot:nonroot
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tollgate", "healthcheck", "--addr", "127.0.0.1:4000"]
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
