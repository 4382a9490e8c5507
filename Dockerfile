# ingressd container image.
#   docker build -t ingressd:0.1.0 .
#
# Two stages on the same pinned base. The first installs ingressd and its
# dependencies (pyproject.toml's, resolved by pip) into a virtualenv at
# /opt/ingressd (with the tracing extra: OpenTelemetry's SDK and OTLP/HTTP
# exporter), with the hot modules compiled by mypyc (setup.py; gcc is in
# this stage only, and INGRESSD_REQUIRE_COMPILED makes a failed compile fail
# the build rather than ship pure Python); uvloop, httptools, cryptography and
# bcrypt ship manylinux wheels. The second copies only that virtualenv: no
# wheels, no pip cache, no compiler, and no layer that a later `rm` would only
# hide. Both stages use the same path and the same Python, so the
# virtualenv works as it was built.
#
# Bytecode is compiled at install time (pip's default) so workers start without
# compiling; PYTHONDONTWRITEBYTECODE keeps the running process from trying to
# write any, as the root filesystem is read-only in deploy/deployment.yaml.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ingressd ./ingressd
# --without-pip: the base image's pip installs into it; the image gets no second pip.
RUN python -m venv --without-pip /opt/ingressd \
    && INGRESSD_REQUIRE_COMPILED=1 pip --python /opt/ingressd/bin/python install '.[tracing]'

FROM python:3.11.11-slim-bookworm
ENV PATH=/opt/ingressd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/ingressd /opt/ingressd
RUN groupadd --system --gid 10001 ingressd \
    && useradd --system --uid 10001 --gid ingressd --no-create-home --shell /usr/sbin/nologin ingressd
USER 10001:10001
EXPOSE 8080 8443 10254 8444
ENTRYPOINT ["ingressd"]
CMD ["serve", "--in-cluster"]
