# The one image of the three components (standby-watcher, standby-syncer, standby-recovery) and the
# operator's `standby` command. Dependencies come from requirements.lock (pinned, hashed:
# `make lock` regenerates it from pyproject.toml); the development tooling (services/devenv, the
# local clusters and the demo) is not in it. Runs as a non-root user with a read-only root
# filesystem: no bytecode is written at run time, and TLS material stays in memory.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/standby
COPY requirements.lock /src/
RUN /opt/standby/bin/pip install --require-hashes --no-deps -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY schemas /src/schemas
COPY services /src/services
RUN rm -rf /src/services/devenv \
 && /opt/standby/bin/pip install --no-deps /src \
 && /opt/standby/bin/python -m compileall -q /opt/standby

FROM python:3.11-slim
COPY --from=build /opt/standby /opt/standby
ENV PATH=/opt/standby/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT []
CMD ["standby", "--help"]
