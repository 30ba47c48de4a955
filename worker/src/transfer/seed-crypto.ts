/**
 * Trans-LoRA seeds at rest: the few real samples kept at stage 0 are stored with the
 * version encrypted with AES-256-GCM (random 96-bit IV, 128-bit tag) under a key the
 * worker reads from LOWRANK_SEED_KEY (32 bytes as 64 hex digits or base64). The file
 * names the key by a fingerprint (sha256 of the key, 16 hex digits) so a wrong key is
 * told apart from damaged data. Public metadata carries only each seed's sha256.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { LowrankError } from '@lowrank/crds/errors';

export const SEED_KEY_ENV = 'LOWRANK_SEED_KEY';

export interface SeedRecord {
  prompt: string;
  completion: string;
}

export interface EncryptedSeeds {
  format: 'lowrank-seeds-v1';
  alg: 'aes-256-gcm';
  keyId: string;
  iv: string;
  tag: string;
  ciphertext: string;
}

/** The 32-byte key from the environment, refused with what to set when absent or malformed. */
export function seedKey(env: NodeJS.ProcessEnv = process.env): Buffer {
  const raw = env[SEED_KEY_ENV]?.trim();
  if (!raw)
    throw new LowrankError(
      'invalid_request',
      `${SEED_KEY_ENV} is not set: Trans-LoRA keeps its real seed samples encrypted; give the worker a 32-byte key as 64 hex digits or base64 (e.g. openssl rand -hex 32)`,
    );
  const key = /^[0-9a-fA-F]{64}$/.test(raw) ? Buffer.from(raw, 'hex') : Buffer.from(raw, 'base64');
  if (key.length !== 32)
    throw new LowrankError('invalid_request', `${SEED_KEY_ENV} must be 32 bytes (64 hex digits or base64); it decodes to ${key.length}`);
  return key;
}

export const keyId = (key: Buffer): string => createHash('sha256').update(key).digest('hex').slice(0, 16);

/** sha256 of a seed's canonical JSON ({prompt, completion}): what public metadata shows. */
export function seedHash(s: SeedRecord): string {
  return `sha256:${createHash('sha256')
    .update(JSON.stringify({ prompt: s.prompt, completion: s.completion }))
    .digest('hex')}`;
}

export function encryptSeeds(seeds: SeedRecord[], key: Buffer): EncryptedSeeds {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const ciphertext = Buffer.concat([cipher.update(JSON.stringify(seeds), 'utf8'), cipher.final()]);
  return {
    format: 'lowrank-seeds-v1',
    alg: 'aes-256-gcm',
    keyId: keyId(key),
    iv: iv.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    ciphertext: ciphertext.toString('base64'),
  };
}

export function decryptSeeds(file: EncryptedSeeds, key: Buffer, where: string): SeedRecord[] {
  if (file?.format !== 'lowrank-seeds-v1' || file.alg !== 'aes-256-gcm')
    throw new LowrankError('invalid_file', `${where}: not a lowrank-seeds-v1 AES-256-GCM file`);
  if (file.keyId !== keyId(key))
    throw new LowrankError(
      'invalid_request',
      `${where}: the seeds were encrypted under key ${file.keyId}, but ${SEED_KEY_ENV} is key ${keyId(key)}; give the key used at stage 0`,
    );
  let text: string;
  try {
    const d = createDecipheriv('aes-256-gcm', key, Buffer.from(file.iv, 'base64'));
    d.setAuthTag(Buffer.from(file.tag, 'base64'));
    text = Buffer.concat([d.update(Buffer.from(file.ciphertext, 'base64')), d.final()]).toString('utf8');
  } catch {
    throw new LowrankError('invalid_file', `${where}: the seeds fail authentication (damaged or altered)`);
  }
  const seeds = JSON.parse(text) as SeedRecord[];
  if (!Array.isArray(seeds) || seeds.some((s) => typeof s?.prompt !== 'string' || typeof s?.completion !== 'string'))
    throw new LowrankError('invalid_file', `${where}: the decrypted seeds are not [{prompt, completion}]`);
  return seeds;
}
