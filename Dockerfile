# ingressd container image.
#   docker build -t ingressd:0.1.0 .
# Two stages: wheels are built in the first (uvloop and httptools ship
# manylinux wheels, so no compiler is needed), and only the installed package
# reaches the final image, which runs as a non-root user.

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingressd ./ingressd
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels ingressd \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 ingressd \
    && useradd --system --uid 10001 --gid ingressd --no-create-home --shell /usr/sbin/nologin ingressd
USER 10001:10001
EXPOSE 8080 8443 10254
ENTRYPOINT ["ingressd"]
CMD ["serve", "--in-cluster"]
