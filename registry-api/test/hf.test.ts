/**
 * The Hugging Face-compatible API with the real clients from PyPI: huggingface_hub's
 * snapshot_download and PEFT's PeftModel.from_pretrained pull a version pushed to the
 * registry, byte for byte, and the model computes the same logits as from local files.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createToken } from '../src/auth/tokens.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const script = join(import.meta.dirname, 'python', 'hf_pull.py');
function pythonPath(): string {
  const py = process.env.LOWRANK_PYTHON;
  if (!py) throw new Error('LOWRANK_PYTHON is not set: run the tests with `npm test`, which creates the PyTorch/PEFT venv');
  return py;
}
const lastLine = (out: string) => JSON.parse(out.trim().split('\n').at(-1) as string) as Record<string, unknown>;
/** Asynchronous: the registry under test runs in this process and must keep serving. */
async function python(...args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await promisify(execFile)(pythonPath(), [script, ...args], {
    encoding: 'utf8',
    timeout: 240_000,
    maxBuffer: 16 << 20,
  });
  return lastLine(stdout);
}
const digestOf = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('Hugging Face clients pull from the registry', () => {
  let reg: TestRegistry;
  let token: string;
  const dir = mkdtempSync(join(tmpdir(), 'hf-pull-'));

  before(async () => {
    lastLine(execFileSync(pythonPath(), [script, 'make', dir], { encoding: 'utf8' }));
    reg = await startRegistry();
    const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
    const team = await reg.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
    const user = await reg.prisma.user.create({
      data: { handle: 'ada', memberships: { create: { teamId: team.id, role: 'maintainer' } } },
    });
    token = (await createToken(reg.prisma, { userId: user.id, name: 'hf', scope: 'write' })).token;
    const h = { authorization: `Bearer ${token}` };
    const r = await fetch(`${reg.base}/v1/repos`, {
      method: 'POST',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({ namespace: 'nlp', name: 'tiny-adapter', baseModel: 'local/tiny-llama' }),
    });
    assert.equal(r.status, 201);
    const files = readdirSync(join(dir, 'adapter')).map((name) => ({ name, data: readFileSync(join(dir, 'adapter', name)) }));
    for (const f of files) {
      const up = await fetch(`${reg.base}/v1/repos/nlp/tiny-adapter/blobs/${digestOf(f.data)}`, {
        method: 'PUT',
        headers: { ...h, 'content-type': 'application/octet-stream' },
        body: f.data,
      });
      assert.ok(up.ok, await up.text());
    }
    const commit = await fetch(`${reg.base}/v1/repos/nlp/tiny-adapter/versions`, {
      method: 'POST',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({
        files: files.map((f) => ({ path: f.name, digest: digestOf(f.data), size: f.data.length })),
        config: JSON.parse(readFileSync(join(dir, 'adapter', 'adapter_config.json'), 'utf8')),
        tags: ['prod'],
        lineage: [{ relation: 'trained_from', parentRef: 'hf:local/tiny-llama' }],
      }),
    });
    assert.equal(commit.status, 201, await commit.text());
  });

  for (const revision of ['prod', '1', 'main']) {
    it(`snapshot_download and PeftModel.from_pretrained at revision "${revision}"`, async () => {
      const out = await python('pull', dir, reg.base, token, 'nlp/tiny-adapter', revision);
      assert.deepEqual(out.snapshot_files, readdirSync(join(dir, 'adapter')).sort());
      assert.ok(Object.values(out.same_bytes as Record<string, boolean>).every(Boolean), JSON.stringify(out.same_bytes));
      assert.equal(out.adapter_changes_output, true, 'the adapter is not a no-op');
      // Same weights, same code path: identical up to float32 rounding (stated tolerance 1e-6).
      assert.ok((out.max_abs_diff as number) <= 1e-6, `logits differ by ${out.max_abs_diff}`);
    });
  }

  it('answers the headers hf_hub_download relies on, and Hub error codes', async () => {
    const h = { authorization: `Bearer ${token}` };
    const info = (await (await fetch(`${reg.base}/api/models/nlp/tiny-adapter/revision/prod`, { headers: h })).json()) as any;
    assert.match(info.sha, /^[0-9a-f]{40}$/);
    assert.equal(info.cardData.base_model, 'local/tiny-llama');
    assert.equal(info.cardData.base_model_relation, 'adapter');
    const head = await fetch(`${reg.base}/nlp/tiny-adapter/resolve/${info.sha}/adapter_config.json`, { method: 'HEAD', headers: h });
    const bytes = readFileSync(join(dir, 'adapter', 'adapter_config.json'));
    assert.equal(head.headers.get('x-repo-commit'), info.sha);
    assert.equal(head.headers.get('x-linked-etag'), `"${digestOf(bytes).slice(7)}"`);
    assert.equal(head.headers.get('x-linked-size'), String(bytes.length));
    const missing = await fetch(`${reg.base}/nlp/tiny-adapter/resolve/main/nope.bin`, { headers: h });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('x-error-code'), 'EntryNotFound');
    assert.equal(
      (await fetch(`${reg.base}/api/models/nlp/tiny-adapter/revision/v9`, { headers: h })).headers.get('x-error-code'),
      'RevisionNotFound',
    );
    // A version pushed without a README gets a generated model card with Hub metadata.
    const bare = readFileSync(join(dir, 'adapter', 'adapter_model.safetensors'));
    await fetch(`${reg.base}/v1/repos/nlp/tiny-adapter/versions`, {
      method: 'POST',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({
        files: [{ path: 'adapter_model.safetensors', digest: digestOf(bare), size: bare.length }],
        config: {},
        tags: ['bare'],
      }),
    });
    const siblings = ((await (await fetch(`${reg.base}/api/models/nlp/tiny-adapter/revision/bare`, { headers: h })).json()) as any)
      .siblings;
    assert.deepEqual(siblings.map((s: { rfilename: string }) => s.rfilename).sort(), ['README.md', 'adapter_model.safetensors']);
    const card = await (await fetch(`${reg.base}/nlp/tiny-adapter/resolve/bare/README.md`, { headers: h })).text();
    assert.match(card, /^---\nbase_model: local\/tiny-llama\nbase_model_relation: adapter\nlibrary_name: peft\n/);
    assert.match(card, /PeftModel\.from_pretrained\(base, "nlp\/tiny-adapter", revision="2"\)/);
    const anon = await fetch(`${reg.base}/api/models/nlp/tiny-adapter`);
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('x-error-code'), 'RepoNotFound');
  });
});
