# syntax=docker/dockerfile:1
# The regwarden image: `regwarden serve` (the webhook receiver) and every CLI command
# (the retention CronJob runs `regwarden invoke retention`). infra/k8s deploys it.
#
#   docker build -t REGISTRY/regwarden:VERSION .
#   make k8s-image IMAGE=REGISTRY/regwarden@sha256:<the pushed digest>
#
# Two stages on one base: `build` installs regwarden and its extras into a virtualenv at
# /opt/regwarden; `runtime` copies only that virtualenv (no compiler, no pip cache, no
# source tree). Both stages use the same Python so the venv's interpreter link resolves.
# The base is pinned by its full version tag (no registry is reachable where this was
# written to read its digest); pin it by digest too (python:3.11.14-slim-bookworm@sha256:…)
# when you build.
#
# No HEALTHCHECK: Kubernetes ignores it (the Deployment's probes call /readyz and
# /healthz), and the same image runs one-shot commands (the CronJob), which have no
# HTTP endpoint to check.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# serve: the receiver; postgres: the ledger and queue (psycopg 3, its pool); k8s: the
# retention inventory of the cluster's workloads
ARG EXTRAS=serve,postgres,k8s
WORKDIR /src
RUN python -m venv /opt/regwarden
COPY pyproject.toml README.md ./
COPY shared/ shared/
# pip compiles the bytecode here: the runtime's root filesystem is read-only
RUN /opt/regwarden/bin/pip install ".[${EXTRAS}]"

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="regwarden" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/regwarden/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# libpq: psycopg (the postgres extra) is the pure-Python build on the system's libpq, as
# in the tests (Debian's libpq5); the only package the runtime adds to the base
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/regwarden /opt/regwarden
# A numeric user and group (Kubernetes' runAsNonRoot can only check a number); the
# manifests run it as 10001 too and mount the root filesystem read-only.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["regwarden"]
CMD ["serve", "--host=0.0.0.0", "--port=8080"]
