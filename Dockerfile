# syntax=docker/dockerfile:1
# The compute image: Debian bookworm's PostgreSQL 15 and compute_ctl (with the operator),
# running as the `postgres` user. compute_ctl is the entrypoint; the operator sidecar runs
# the same image with `command: [compute-ctl-operator]`.
#
#   scripts/build-image          # buildah, no registry (see docs/quickstart.md)
#   docker build -t compute-ctl .
#
# Layers are ordered for caching: the dependencies (read from pyproject.toml) are installed
# before the source is copied, so a code change reinstalls only the project itself.
# The runtime venv has no pip or setuptools; apt leaves no package cache or lists; docs,
# man pages and locales are removed. PostgreSQL's LLVM JIT (llvmjit.so, its bitcode and
# libLLVM: ~155 MB) is removed too: without llvmjit.so postgres runs with JIT unavailable
# (`jit` has no effect), as most compute images do.
#
# What the Neon-parity features need at runtime, from Debian:
# - postgresql-15-pgaudit, postgresql-15-pgauditlogtofile: audit_log_level (compute.audit);
# - pgbouncer (with libevent, c-ares): for a pgbouncer container beside postgres, run from
#   this image; compute.pgbouncer tunes it (--pgbouncer-ini, --pgbouncer-connstr);
# - rsyslog with rsyslog-gnutls (~3 MB with its libraries): the Extended/Full audit levels
#   ship <pgdata>/log through an rsyslogd (compute.audit_ship), over TCP or TLS (gtls), as in
#   Neon's compute image. Kept in: a compute with those levels does not start without a
#   live rsyslogd to restart. Neither it nor pgbouncer is started by compute_ctl or by this
#   image: a supervisor in the pod runs it (a container sharing the process namespace, or a
#   wrapper in this one) as the postgres user, its config including the directory given to
#   --rsyslog-conf-dir and its pid file at --rsyslogd-pid-file (docs/audit.md).
# pg_buffercache and pg_prewarm (compute.lfc) ship in postgresql-15 itself; zstandard and the
# other Python dependencies come from pyproject.toml below. zstandard's wheel has two
# backends of ~12 MB each: its CFFI one, which it imports only when the C one is missing
# (or PYTHON_ZSTANDARD_IMPORT_POLICY asks), is removed.

ARG DEBIAN_RELEASE=bookworm

# --- builder: the package and its dependencies, installed into a venv ----------------
FROM debian:${DEBIAN_RELEASE}-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
# The venv's python links to /usr/bin/python3: the same path and version in the runtime stage.
# Dependencies only (the `operator` extra included), from pyproject.toml.
RUN python3 -m venv /opt/compute-ctl \
    && /opt/compute-ctl/bin/pip install --no-cache-dir --upgrade pip \
    && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["operator"]))' > /tmp/deps.txt \
    && /opt/compute-ctl/bin/pip install --no-cache-dir -r /tmp/deps.txt \
    && rm -f /opt/compute-ctl/lib/python3*/site-packages/zstandard/_cffi.*.so
COPY README.md ./
COPY compute_ctl ./compute_ctl
COPY compute ./compute
COPY operator ./operator
RUN /opt/compute-ctl/bin/pip install --no-cache-dir --no-deps ".[operator]" \
    && /opt/compute-ctl/bin/pip uninstall -y -q pip setuptools \
    && find /opt/compute-ctl -name '__pycache__' -prune -exec rm -rf {} + \
    && /opt/compute-ctl/bin/python -m compileall -q /opt/compute-ctl/lib

# --- runtime: PostgreSQL from Debian, the venv, the postgres user ---------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# A fixed uid/gid (999, as the official postgres image) created before the package would
# pick one, so pod securityContexts and volume ownership can name it.
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql \
        --shell /bin/bash postgres \
    && mkdir -p /var/lib/postgresql/data /etc/postgresql-common \
    && chown -R postgres:postgres /var/lib/postgresql \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        postgresql-15 python3 ca-certificates \
        postgresql-15-pgaudit postgresql-15-pgauditlogtofile pgbouncer rsyslog rsyslog-gnutls \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
        /usr/share/doc /usr/share/man /usr/share/locale /usr/share/info \
        /usr/lib/postgresql/15/lib/llvmjit* /usr/lib/postgresql/15/lib/bitcode \
        /usr/lib/*/libLLVM-*.so* /usr/lib/*/libz3.so*
COPY --from=builder /opt/compute-ctl /opt/compute-ctl
ENV PATH=/opt/compute-ctl/bin:/usr/lib/postgresql/15/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
USER postgres
WORKDIR /var/lib/postgresql
EXPOSE 5432 3080
ENTRYPOINT ["compute_ctl"]
