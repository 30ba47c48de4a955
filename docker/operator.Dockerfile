# The operator image: `docker build -f docker/operator.Dockerfile -t ghcr.io/lowrank/operator:0.1.0 .`
# Node runs the TypeScript sources directly (type stripping), as in development.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY crds/package.json crds/
COPY operator/package.json operator/
RUN npm install --omit=dev --no-audit --no-fund -w operator -w crds --include-workspace-root=false

FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules node_modules
COPY package.json ./
COPY crds crds
COPY operator operator
# Non-root, read-only root filesystem in the chart; nothing here writes outside /tmp.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["node", "operator/src/main.ts"]
