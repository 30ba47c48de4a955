# The worker image run by the operator's Jobs (`node worker/src/cli.ts run --spec <file>`):
#   docker build -f docker/worker.Dockerfile -t ghcr.io/lowrank/worker:0.1.0 .
# For GPU nodes build FROM an nvidia/cuda runtime image with Node 24 added (the native
# core's CUDA backend); this CPU image runs gpu.count: 0 jobs.
FROM node:24-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake ninja-build g++ libopenblas-dev liblapacke-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY crds/package.json crds/
COPY worker/package.json worker/
RUN npm install --no-audit --no-fund -w worker -w crds --include-workspace-root=false
COPY crds crds
COPY worker worker
RUN cd worker && npx --no-install cmake-js compile --directory native --out native/build

FROM node:24-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libopenblas0 liblapacke && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/package.json ./
COPY --from=build /app/crds crds
COPY --from=build /app/worker worker
USER 10001:10001
ENTRYPOINT ["node", "worker/src/cli.ts"]
