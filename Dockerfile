# ssmd-connector: the recorder (default command) and the `ssmd` tools (archiver, simulator).
#   docker build -t ssmd-connector .
#   docker run --read-only --tmpfs /tmp -v ssmd-data:/var/lib/ssmd -v "$PWD/examples/config:/etc/ssmd:ro" \
#     ssmd-connector --env prod --config-dir /etc/ssmd
# Data and the NATS spill live under the volume /var/lib/ssmd; nothing else is written, so the
# root filesystem can be read-only. HEALTHCHECK asks /health on $SSMD_HEALTH_PORT (8080; the
# archiver in deploy/ uses 9101 and sets it).

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/ssmd \
 && /opt/ssmd/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/ssmd/bin/python -m compileall -q /opt/ssmd

FROM python:3.12-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ssmd --no-create-home --shell /usr/sbin/nologin ssmd \
 && mkdir -p /var/lib/ssmd /etc/ssmd \
 && chown ssmd:ssmd /var/lib/ssmd
COPY --from=build /opt/ssmd /opt/ssmd
ENV PATH=/opt/ssmd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SSMD_HEALTH_PORT=8080
USER 10001:10001
WORKDIR /var/lib/ssmd
VOLUME ["/var/lib/ssmd"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:%s/health' % os.environ['SSMD_HEALTH_PORT'], timeout=4).status != 200)"]
ENTRYPOINT ["ssmd-connector"]
CMD ["--env", "prod", "--config-dir", "/etc/ssmd", "--health-addr", "0.0.0.0:8080"]
