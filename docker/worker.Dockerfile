# The worker image run by the operator's Jobs (`node worker/src/cli.ts run --spec <file>`):
#   docker build -f docker/worker.Dockerfile -t ghcr.io/lowrank/worker:0.1.0 .
# For GPU nodes build FROM an nvidia/cuda runtime image with Node 24 added (the native
# core's CUDA backend); this CPU image runs gpu.count: 0 jobs.
FROM node:24-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake ninja-build g++ libopenblas-dev liblapacke-dev curl python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY crds/package.json crds/
COPY worker/package.json worker/
RUN ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund -w worker -w crds --include-workspace-root=false
COPY crds crds
COPY worker worker
RUN cd worker && npx --no-install cmake-js compile --directory native --out native/build
# The sentence-embedding model of AdapterJob modes train-generator / generate (Maven Central package).
COPY scripts/fetch-embedder scripts/fetch-embedder
COPY scripts/lib/apt.sh scripts/lib/apt.sh
RUN LOWRANK_CACHE=/app/.cache scripts/fetch-embedder

FROM node:24-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libopenblas0 liblapacke && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/package.json ./
COPY --from=build /app/crds crds
COPY --from=build /app/worker worker
COPY --from=build /app/.cache/embedders/all-minilm-l6-v2-q /opt/lowrank/embedders/all-minilm-l6-v2-q
ENV LOWRANK_EMBEDDER_DIR=/opt/lowrank/embedders/all-minilm-l6-v2-q
USER 10001:10001
ENTRYPOINT ["node", "worker/src/cli.ts"]
