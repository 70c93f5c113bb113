# One image for both roles: `kubeprober agent` and `kubeprober aggregator` (the manifests set
# the command). Build from the repository's top: docker build -t IMAGE:VERSION .
# Stage 1 builds the wheel and installs it with its dependencies into a virtualenv; stage 2
# takes only that virtualenv, and runs as an unprivileged user with no shell login.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN python -m venv /opt/kubeprober \
 && /opt/kubeprober/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/kubeprober/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/kubeprober/bin/pip install --no-cache-dir /wheels/kubeprober-*.whl

FROM python:3.11-slim
COPY --from=build /opt/kubeprober /opt/kubeprober
ENV PATH=/opt/kubeprober/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The same numeric user the manifests run as (runAsNonRoot needs a number to check).
USER 10001:10001
ENTRYPOINT ["kubeprober"]
CMD ["--help"]
