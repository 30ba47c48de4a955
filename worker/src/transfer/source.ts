/**
 * What a transfer job reads from the source version (stage 0's files, see stage0.ts): the
 * source adapter, its stage-0 record, the decrypted seeds (checked against the recorded
 * hashes) and the discriminator (the stage-0 one, or spec.transfer.discriminator).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LowrankError } from '@lowrank/crds/errors';
import type { AdapterJobSpecDefaulted } from '@lowrank/crds/types';
import { type PeftAdapter, readPeftAdapter } from '../peft/adapter-dir.ts';
import { type FetchedAdapter, fetchAdapter } from '../run/inputs.ts';
import type { RunContext } from '../run/types.ts';
import { decryptSeeds, type EncryptedSeeds, type SeedRecord, seedHash } from './seed-crypto.ts';
import { STAGE0_FILE, type Stage0File } from './stage0.ts';

type Transfer = NonNullable<AdapterJobSpecDefaulted['transfer']>;

export interface TransferSource {
  adapter: FetchedAdapter;
  stage0: Stage0File;
  seeds: SeedRecord[];
  discriminator: PeftAdapter;
  discriminatorRef: string;
}

export async function loadSource(t: Transfer, key: Buffer, ctx: RunContext): Promise<TransferSource> {
  const adapter = await fetchAdapter(t.sourceAdapter, 'spec.transfer.sourceAdapter', ctx.client, ctx.workDir);
  const name = adapter.parent ?? adapter.parentRef ?? adapter.dir;
  const file = join(adapter.dir, STAGE0_FILE);
  if (!existsSync(file))
    throw new LowrankError(
      'invalid_spec',
      `spec.transfer.sourceAdapter: ${name} has no ${STAGE0_FILE}; it was not trained with training.transferable (retrain it with transferable: true)`,
    );
  const stage0 = JSON.parse(readFileSync(file, 'utf8')) as Stage0File;
  if (stage0.format !== 'lowrank-transfer-stage0-v1')
    throw new LowrankError('invalid_file', `${name}: ${STAGE0_FILE} is not lowrank-transfer-stage0-v1`);
  const hint = t.sourceAdapter.rank;
  if (hint !== undefined && hint !== adapter.adapter.config.r)
    throw new LowrankError(
      'invalid_spec',
      `spec.transfer.sourceAdapter.rank: ${hint} given, but ${name} has r = ${adapter.adapter.config.r}; fix or drop the hint`,
    );
  if (adapter.adapter.config.use_dora)
    throw new LowrankError('invalid_spec', `spec.transfer.sourceAdapter: ${name} is DoRA; transferring DoRA adapters is not supported yet`);
  const enc = JSON.parse(readFileSync(join(adapter.dir, stage0.seeds.file), 'utf8')) as EncryptedSeeds;
  const seeds = decryptSeeds(enc, key, `${name}: ${stage0.seeds.file}`);
  seeds.forEach((s, i) => {
    if (seedHash(s) !== stage0.seeds.hashes[i])
      throw new LowrankError('invalid_file', `${name}: seed ${i} does not match its recorded hash`);
  });
  if (t.seedSamples > seeds.length)
    throw new LowrankError(
      'invalid_spec',
      `spec.transfer.seedSamples: ${t.seedSamples} asked, but ${name} kept ${seeds.length} seeds at stage 0`,
    );
  if (t.discriminator) {
    const d = await fetchAdapter(t.discriminator, 'spec.transfer.discriminator', ctx.client, ctx.workDir);
    return {
      adapter,
      stage0,
      seeds: seeds.slice(0, t.seedSamples),
      discriminator: d.adapter,
      discriminatorRef: d.parent ?? d.parentRef ?? d.dir,
    };
  }
  return {
    adapter,
    stage0,
    seeds: seeds.slice(0, t.seedSamples),
    discriminator: readPeftAdapter(join(adapter.dir, stage0.discriminator.dir)),
    discriminatorRef: `${name}:${stage0.discriminator.dir}`,
  };
}
