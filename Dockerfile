# syntax=docker/dockerfile:1.7
# enviromon — 容器镜像 / container image
#
#   docker build -t enviromon .                    # from the repository root
#   cd deploy && docker compose up -d              # the whole stack (see deploy/README.md)
#
# Stage 1 compiles the dependencies in a layer of their own (rebuilt only when Cargo.toml or
# Cargo.lock change), then the daemon. Stage 2 is a small Debian runtime running as the
# unprivileged user `enviromon` (uid/gid 10001).
# The build context is filtered by .dockerignore: Cargo.toml, Cargo.lock, src/, config/, seeds/.

# The toolchain the lockfile is built and tested with (rust-version in Cargo.toml is the minimum).
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS builder
WORKDIR /src

# 1. Dependencies only, with placeholder sources: cached until the manifest or the lockfile change.
#    Cargo resolves the source of every target the manifest declares (e.g. the benchmark driver
#    declared as an [[example]]) when it loads it, even those `cargo build` does not compile, so
#    each declared `path = "….rs"` gets a placeholder; they stay for step 2, where only the crate's
#    library and binary are built.
COPY Cargo.toml Cargo.lock ./
RUN set -eu; \
    for target in src/main.rs src/lib.rs \
        $(sed -nE 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"([^"]+[.]rs)".*/\1/p' Cargo.toml); do \
      mkdir -p "$(dirname "$target")"; \
      [ -e "$target" ] || echo 'fn main() {}' > "$target"; \
    done; \
    cargo build --release --locked; \
    rm -rf src

# 2. The daemon. config/ and seeds/ are compiled in (include_str!: defaults, alert rules, Modbus
#    profiles, district seeds), so they belong to the build as well as to the runtime image.
COPY src ./src
COPY config ./config
COPY seeds ./seeds
# The placeholder build left artifacts newer than these files: touch the crate roots so cargo
# rebuilds the enviromon crate (only it; the dependencies stay cached).
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/enviromon /out/enviromon \
 && /out/enviromon --version

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_SUITE}-slim AS runtime

# ca-certificates: https to InfluxDB, webhooks, DingTalk/WeCom robots.
# curl: the HEALTHCHECK below (the daemon has no health subcommand).
# fonts-wqy-microhei: the CJK font `enviromon report` draws its PNG with (read straight from
#   /usr/share/fonts/truetype/wqy/wqy-microhei.ttc by plotters' ab_glyph; no fontconfig needed).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl fonts-wqy-microhei \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid so volumes and bind mounts can be prepared on the host (chown 10001:10001).
RUN groupadd --system --gid 10001 enviromon \
 && useradd --system --uid 10001 --gid enviromon --no-create-home \
      --home-dir /var/lib/enviromon --shell /usr/sbin/nologin enviromon \
 && install -d -o enviromon -g enviromon -m 0750 /var/lib/enviromon \
 && install -d -m 0755 /etc/enviromon /etc/enviromon/profiles /usr/share/enviromon

# Files the daemon reads (root-owned, read-only for it):
#   /etc/enviromon/seeds/       registry.seeds_dir — the district's sites, units, sensors and
#                               targets (loaded on the first start; later starts only add new ids)
#   /etc/enviromon/profiles/    empty; for modbus.profiles_dir when you mount extra Modbus profiles
#   /usr/share/enviromon/       reference copies of what is built in: default.toml (every key and
#                               its default), alerts.toml (the alert rules, a starting point for
#                               alerts.rules_file), profiles/ (the shipped Modbus profiles)
COPY seeds/ /etc/enviromon/seeds/
COPY config/default.toml config/alerts.toml /usr/share/enviromon/
COPY config/profiles/ /usr/share/enviromon/profiles/

# Default configuration of a bare `docker run`: embedded SQLite store in the volume, API on all
# interfaces of the container. deploy/docker-compose.yml mounts its own file over this one.
# Every key and its default: /usr/share/enviromon/default.toml. Override any key with
# ENVIROMON__SECTION__KEY, e.g. -e ENVIROMON__MQTT__HOST=broker.lan
COPY <<'EOF' /etc/enviromon/enviromon.toml
# enviromon — image default configuration / 镜像默认配置
[daemon]
data_dir = "/var/lib/enviromon"

[http]
listen = "0.0.0.0:8080"

[store]
kind = "embedded"

[registry]
seeds_dir = "/etc/enviromon/seeds"
EOF

# The binary last: it changes with every release, the layers above rarely.
COPY --from=builder /out/enviromon /usr/local/bin/enviromon

LABEL org.opencontainers.image.title="enviromon" \
      org.opencontainers.image.description="涧西区环境监测守护进程 / Jianxi District environmental monitoring daemon" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# Embedded database (enviromon.db), spool/ and deadletter.jsonl: keep them across upgrades.
VOLUME ["/var/lib/enviromon"]
WORKDIR /var/lib/enviromon

# HTTP API, /healthz, /readyz, /metrics. (HJ 212 data loggers: 9212, when hj212.enabled.)
EXPOSE 8080

USER 10001:10001

# /healthz answers 200 while the process serves; /readyz (broker connected and store writable) is
# for dashboards and alerts — a store outage must not make the container look dead, the spool
# holds the readings meanwhile.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

# SIGTERM: sources stop, the spool is flushed, exit 0 within daemon.shutdown_deadline; give the
# container a longer stop timeout than that (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["enviromon"]
CMD ["run", "--config", "/etc/enviromon/enviromon.toml"]
