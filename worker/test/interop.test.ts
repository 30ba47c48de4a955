/**
 * Interop with PEFT through the whole platform: adapters trained by PEFT (20 AdamW steps
 * on a tiny Llama) are imported with `lora push`, merged (cat) and rank-reduced by
 * `lora-worker run` as registry jobs, pulled back and loaded by PeftModel.from_pretrained.
 * Logits must match PEFT's own add_weighted_adapter(cat) of the same inputs, and a
 * lossless rank reduction (energy 1.0) must keep the adapter's logits; tolerance: relative
 * 1e-5 of the logits' norm (float32 chains in both).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createToken } from '../../registry-api/src/auth/tokens.ts';
import { RegistryClient } from '../../registry-api/src/cli/client.ts';
import { pull } from '../../registry-api/src/cli/transfer.ts';
import { startRegistry, type TestRegistry } from '../../registry-api/test/support/app.ts';
import { pythonDir, referencePython } from './support/python-ref.ts';

const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'lowrank-interop-'));
const LORA = join(import.meta.dirname, '..', '..', 'registry-api', 'src', 'cli', 'main.ts');
const WORKER = join(import.meta.dirname, '..', 'src', 'cli.ts');
let reg: TestRegistry;
let env: NodeJS.ProcessEnv;

async function py(...args: string[]): Promise<any> {
  const { stdout } = await exec(referencePython(), [join(pythonDir, 'peft_interop.py'), ...args], { maxBuffer: 1 << 26 });
  return JSON.parse(stdout.trim().split('\n').at(-1) as string);
}

function relDiff(a: number[], b: number[]): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += ((a[i] as number) - (b[i] as number)) ** 2;
    den += (b[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

async function job(spec: unknown): Promise<string> {
  const file = join(dir, `job-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(spec));
  const result = join(dir, `result-${Date.now()}.json`);
  await exec(process.execPath, [WORKER, 'run', '--spec', file, '--result-file', result], { env });
  const { output } = JSON.parse(await import('node:fs').then((fs) => fs.readFileSync(result, 'utf8')));
  const out = join(dir, 'out', output.ref.replace(/[/@]/g, '_'));
  await pull(new RegistryClient({ registry: reg.base, token: env.LOWRANK_TOKEN }), output.repository, String(output.version), out);
  return out;
}

describe('PEFT-trained adapters through the registry and the worker', () => {
  before(async () => {
    const trained = await py('train', dir);
    assert.ok(trained.a[1] < trained.a[0] && trained.b[1] < trained.b[0], `PEFT training lowered the loss: ${JSON.stringify(trained)}`);
    reg = await startRegistry();
    const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
    const team = await reg.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
    const user = await reg.prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: team.id } } } });
    const { token } = await createToken(reg.prisma, { userId: user.id, name: 't', scope: 'write' });
    env = {
      ...process.env,
      LOWRANK_REGISTRY: reg.base,
      LOWRANK_REGISTRY_URL: reg.base,
      LOWRANK_TOKEN: token,
      LOWRANK_CONFIG_DIR: join(dir, 'cfg'),
    };
    await exec(process.execPath, [LORA, 'repo', 'create', 'nlp/peft-trained', '--base-model', 'tiny/llama'], { env });
    for (const name of ['a', 'b'])
      await exec(process.execPath, [LORA, 'push', join(dir, name), 'nlp/peft-trained', '--tag', name], { env });
  });

  it('merges them (cat) as PEFT add_weighted_adapter does, loaded back by PEFT', async () => {
    const out = await job({
      kind: 'AdapterMerge',
      spec: {
        inputs: [
          { repository: 'nlp/peft-trained', tag: 'a' },
          { repository: 'nlp/peft-trained', tag: 'b' },
        ],
        weights: [0.7, 0.5],
        method: 'cat',
        output: { repository: 'nlp/peft-merged' },
      },
    });
    const ours = (await py('logits', dir, out)).logits;
    const peft = (await py('weighted', dir, '0.7', '0.5')).logits;
    const rel = relDiff(ours, peft);
    assert.ok(rel <= 1e-5, `logits differ from PEFT's cat merge by ${rel}`);
  });

  it('reduces rank losslessly at energy 1.0 (rank kept), logits unchanged in PEFT', async () => {
    const out = await job({
      kind: 'CompressionJob',
      spec: {
        mode: 'rank-reduction',
        source: { adapter: { repository: 'nlp/peft-trained', tag: 'b' } },
        rankPolicy: { energy: { threshold: 1 } },
        output: { repository: 'nlp/peft-trained', tags: ['b-refactored'] },
      },
    });
    const ours = (await py('logits', dir, out)).logits;
    const original = (await py('logits', dir, join(dir, 'b'))).logits;
    const rel = relDiff(ours, original);
    assert.ok(rel <= 1e-5, `logits moved by ${rel}`);
  });
});
