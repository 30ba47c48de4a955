# The registry image: `docker build -f docker/registry.Dockerfile -t ghcr.io/lowrank/registry:0.1.0 .`
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY crds/package.json crds/
COPY registry-api/package.json registry-api/
COPY prisma prisma
RUN npm install --no-audit --no-fund -w registry-api -w crds --include-workspace-root=false \
 && PRISMA_HIDE_UPDATE_MESSAGE=1 npx prisma generate --config prisma/prisma.config.ts

FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules node_modules
COPY package.json ./
COPY prisma prisma
COPY crds crds
COPY registry-api registry-api
COPY --from=deps /app/registry-api/src/generated registry-api/src/generated
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["node", "registry-api/src/main.ts"]
