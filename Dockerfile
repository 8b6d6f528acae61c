# syntax=docker/dockerfile:1
# The compute image: Debian bookworm's PostgreSQL 15 and compute_ctl (with the operator),
# running as the `postgres` user. compute_ctl is the entrypoint; the operator sidecar runs
# the same image with `command: [compute-ctl-operator]`.
#
#   docker build -t compute-ctl .
#   docker run compute-ctl --pgdata=/var/lib/postgresql/data/pgdata \
#       --connstr=postgresql://cloud_admin@127.0.0.1:5432/postgres --compute-id=c1 --config=...

ARG DEBIAN_RELEASE=bookworm

# --- builder: the package and its dependencies, installed into a venv ----------------
FROM debian:${DEBIAN_RELEASE}-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY compute_ctl ./compute_ctl
COPY compute ./compute
COPY operator ./operator
# The venv's python links to /usr/bin/python3: the same path and version in the runtime stage.
RUN python3 -m venv /opt/compute-ctl \
    && /opt/compute-ctl/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/compute-ctl/bin/pip install --no-cache-dir ".[operator]"

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
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/compute-ctl /opt/compute-ctl
ENV PATH=/opt/compute-ctl/bin:/usr/lib/postgresql/15/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
USER postgres
WORKDIR /var/lib/postgresql
EXPOSE 5432 3080
ENTRYPOINT ["compute_ctl"]
