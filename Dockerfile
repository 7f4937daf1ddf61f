# One image for every modelbus process: `docker run IMAGE services.<name>` runs that service
# (registry, trainer, evaluator, deployer, deployer.serving, monitor, alerter); `shared.ops.cli` is the CLI.
# Build stage: wheels of modelbus and all its dependencies (compilers stay here).
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --wheel-dir /wheels '.[platform,feast]'

# Final stage: no build tools, a non-root user, the source for `python -m services.<name>`.
FROM python:3.11.10-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MODELBUS_REGISTRY_HOST=0.0.0.0 MODELBUS_SERVING_HOST=0.0.0.0 MODELBUS_ALERTER_HOST=0.0.0.0 \
    MODELBUS_CONSOLE_HOST=0.0.0.0 \
    MODELBUS_HEALTH_HOST=0.0.0.0 MODELBUS_HEALTH_PORT=9000 MODELBUS_HEALTHCHECK_PORT=9000
COPY --from=build /wheels /wheels
# The versions are pinned by the wheels built above: --no-index installs exactly those.
# hadolint ignore=DL3013
RUN pip install --no-index --find-links /wheels 'modelbus[platform,feast]' && rm -rf /wheels \
    && groupadd --gid 10001 modelbus && useradd --uid 10001 --gid 10001 --no-create-home modelbus
WORKDIR /app
COPY --chown=10001:10001 shared ./shared
COPY --chown=10001:10001 services ./services
COPY --chown=10001:10001 schemas ./schemas
USER 10001:10001
# Every service answers /healthz: the registry on 8080, serving on 8081, the alerter on 8082, the
# others on MODELBUS_HEALTH_PORT; MODELBUS_HEALTHCHECK_PORT says which one this container checks.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['MODELBUS_HEALTHCHECK_PORT'], timeout=2)"]
ENTRYPOINT ["python", "-m"]
CMD ["services.registry"]
