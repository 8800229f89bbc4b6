# syntax=docker/dockerfile:1
#
# chat-server image: the Rust API plus the built web client, which the server
# serves at `/` (CHAT__WEB__DIST_DIR), so one image is enough on Kubernetes.
#
# Build from the repository root:
#   docker build -f deploy/docker/server.Dockerfile -t chat-server .
#
# Stages:
#   web      - npm ci + vite build -> /web/dist
#   planner  - reduces the workspace to Cargo.toml files + stub sources
#   deps     - compiles only the dependency graph against that skeleton, so
#              this layer is reused until a Cargo.toml or Cargo.lock changes
#   builder  - compiles the real workspace (fast: deps are already built)
#   runtime  - debian:bookworm-slim plus libssl3, non-root, no compiler

ARG RUST_VERSION=1.95
ARG NODE_VERSION=22

# ---------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# ---------------------------------------------------------------------------
# planner: turn the workspace into a skeleton (every Cargo.toml, stub sources).
# Only the skeleton is copied into the next stage, and BuildKit keys COPY on
# file contents, so editing a .rs file does not invalidate the dependency layer
# (the same idea as cargo-chef, without needing cargo-chef).
FROM debian:bookworm-slim AS planner
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /skeleton
COPY Cargo.toml Cargo.lock ./
# Build settings (the bundled SQLite's compile options) belong to the dependency layer.
COPY .cargo/ .cargo/
COPY crates/ crates/
# Any target path a manifest names explicitly (path = "x.rs") is stubbed too,
# so manifests with [[bin]]/[[test]]/[[bench]] sections still load.
RUN for crate in crates/*/; do \
      find "$crate" -mindepth 1 -maxdepth 1 ! -name Cargo.toml -exec rm -rf {} +; \
      mkdir -p "${crate}src"; \
      echo '' > "${crate}src/lib.rs"; \
      echo 'fn main() {}' > "${crate}src/main.rs"; \
      { grep -oE 'path *= *"[^"]+\.rs"' "${crate}Cargo.toml" || true; } \
        | sed -E 's/.*"(.+)"/\1/' \
        | while IFS= read -r target; do \
            mkdir -p "$crate$(dirname "$target")"; \
            echo 'fn main() {}' > "$crate$target"; \
          done; \
    done

# ---------------------------------------------------------------------------
# deps: compile the whole dependency graph against the skeleton.
# The full rust image (not -slim) already carries gcc, make and perl, which the
# bundled SQLite (libsqlite3-sys) and libpq (pq-sys) builds need; nothing is
# installed with apt, so there is nothing to pin here.
FROM rust:${RUST_VERSION}-bookworm AS deps
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked -p server \
    && rm -rf crates

# ---------------------------------------------------------------------------
FROM deps AS builder
COPY crates/ crates/
# The built-in defaults are compiled in (include_str! in crates/server/src/settings.rs).
COPY config/ config/
# COPY keeps the sources' original mtimes, which can be older than the stubs;
# touch them so cargo rebuilds every workspace crate instead of reusing a stub.
RUN find crates -type f -exec touch {} + \
    && cargo build --release --locked -p server \
    && install -D -m 0755 target/release/chat-server /out/chat-server

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The binary links against glibc and OpenSSL: SQLite and libpq are bundled,
# outbound HTTPS is rustls, but libpq speaks TLS to the database through the
# system OpenSSL, which debian:bookworm-slim lacks. libssl3 is its one package,
# left unpinned on purpose: every build takes Debian's latest security fix, and
# image scanners see it as a package. The health check below uses bash's
# /dev/tcp (no curl to pin and patch). CA certificates come from the builder
# for outbound HTTPS (OTLP, model APIs).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /app --shell /usr/sbin/nologin chat \
    && mkdir -p /app/config /app/web /data \
    && chown chat:chat /data

COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/chat-server /usr/local/bin/chat-server
# Refuses an image whose binary would not start for a missing library.
RUN ! ldd /usr/local/bin/chat-server | grep 'not found'
COPY config/ /app/config/
COPY --from=web /web/dist/ /app/web/dist/

WORKDIR /app
# Everything is configurable with CHAT__SECTION__KEY variables at run time;
# these are the container defaults (listen on all interfaces, JSON logs,
# SQLite on the /data volume, web client served from the image).
ENV CHAT_ENV=production \
    CHAT_CONFIG_DIR=/app/config \
    CHAT__SERVER__HOST=0.0.0.0 \
    CHAT__SERVER__PORT=8000 \
    CHAT__STORAGE__BACKEND=sqlite \
    CHAT__STORAGE__URL=/data/chat.db \
    CHAT__WEB__DIST_DIR=/app/web/dist \
    CHAT__LOG__FORMAT=json \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

VOLUME ["/data"]
EXPOSE 8000
# Numeric so Kubernetes runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

# Liveness only (/healthz); readiness (/readyz) belongs to the orchestrator.
# Plain HTTP/1.1 over bash's /dev/tcp: no curl needed in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${CHAT__SERVER__PORT:-8000} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"]

# The server handles SIGTERM itself (graceful drain, exit 0); exec form keeps
# it PID 1 so the signal reaches it directly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chat-server"]
