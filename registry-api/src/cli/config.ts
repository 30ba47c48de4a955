/**
 * Where `lora` keeps its registry URL and token: $LOWRANK_CONFIG_DIR or
 * $XDG_CONFIG_HOME/lowrank or ~/.config/lowrank, config.json, mode 0600. LOWRANK_REGISTRY
 * and LOWRANK_TOKEN override it (CI, pods).
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface CliConfig {
  registry: string;
  token?: string;
}

export function configDir(): string {
  return process.env.LOWRANK_CONFIG_DIR ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'lowrank');
}

export function loadConfig(): CliConfig {
  let saved: Partial<CliConfig> = {};
  try {
    saved = JSON.parse(readFileSync(join(configDir(), 'config.json'), 'utf8')) as Partial<CliConfig>;
  } catch {}
  const token = process.env.LOWRANK_TOKEN || saved.token;
  return { registry: process.env.LOWRANK_REGISTRY || saved.registry || 'http://127.0.0.1:8080', ...(token ? { token } : {}) };
}

export function saveConfig(config: CliConfig): string {
  const dir = configDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'config.json');
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return file;
}
