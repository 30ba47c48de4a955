/** The `lora` CLI as a user runs it, against a registry on real PostgreSQL and MinIO. */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { createToken } from '../src/auth/tokens.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const cli = join(import.meta.dirname, '..', 'src', 'cli', 'main.ts');
const work = mkdtempSync(join(tmpdir(), 'lora-cli-'));
let reg: TestRegistry;
let token: string;

/** Asynchronous: the registry runs in this process. */
function lora(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cli, ...args],
      {
        cwd: work,
        env: { ...process.env, LOWRANK_REGISTRY: reg.base, LOWRANK_CONFIG_DIR: join(work, 'config'), LOWRANK_TOKEN: '', ...env },
      },
      (err, out, errOut) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out, err: errOut }),
    );
  });
}

before(async () => {
  reg = await startRegistry();
  const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
  const team = await reg.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const user = await reg.prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: team.id, role: 'maintainer' } } } });
  token = (await createToken(reg.prisma, { userId: user.id, name: 'cli', scope: 'write' })).token;
});

describe('lora', () => {
  const src = join(work, 'adapter');
  mkdirSync(join(src, 'extra'), { recursive: true });
  writeFileSync(
    join(src, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'LORA', r: 16, lora_alpha: 32, use_dora: true, target_modules: ['q_proj'] }),
  );
  writeFileSync(join(src, 'adapter_model.safetensors'), randomBytes(3 << 20));
  writeFileSync(join(src, 'extra', 'notes.txt'), 'trained on tickets');
  writeFileSync(join(src, '.hidden'), 'not pushed');

  it('explains what to do without a token', async () => {
    const r = await lora(['whoami']);
    assert.equal(r.code, 69);
    assert.match(r.err, /sign in/);
    assert.match(r.err, /hint: `lora login/);
  });

  it('logs in, saving the token privately', async () => {
    const r = await lora(['login', '--token', token, '--registry', reg.base]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /logged in .* as ada \(write token\)/);
    assert.equal(statSync(join(work, 'config', 'config.json')).mode & 0o777, 0o600);
    assert.match((await lora(['whoami'])).out, /^ada \(write; teams: nlp:maintainer/);
    assert.equal((await lora(['login', '--token', 'lrk_nope', '--registry', reg.base])).code, 69);
  });

  it('pushes a directory, uploading only what the registry lacks', async () => {
    assert.equal((await lora(['repo', 'create', 'nlp/support-bot', '--base-model', 'meta-llama/Llama-3.2-1B', '--task', 'chat'])).code, 0);
    const first = await lora(['push', src, 'nlp/support-bot', '--tag', 'prod', '--parent-ref', 'hf:meta-llama/Llama-3.2-1B']);
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, /pushed nlp\/support-bot@1 \(3 uploaded, 0 already stored\)/);
    const again = await lora(['push', src, 'nlp/support-bot']);
    assert.match(again.out, /pushed nlp\/support-bot@2 \(0 uploaded, 3 already stored\)/);
    const shown = await lora(['--json', 'show', 'nlp/support-bot@prod']);
    const v = JSON.parse(shown.out);
    assert.deepEqual([v.number, v.method, v.rank], [1, 'dora', 16], 'method and rank come from adapter_config.json');
    assert.deepEqual(
      v.files.map((f: { path: string }) => f.path),
      ['adapter_config.json', 'adapter_model.safetensors', 'extra/notes.txt'],
    );
  });

  it('pulls a version verified, and resumes by keeping good files', async () => {
    const dest = join(work, 'pulled');
    const r = await lora(['pull', 'nlp/support-bot@1', dest]);
    assert.equal(r.code, 0, r.err);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'extra/notes.txt'])
      assert.ok(readFileSync(join(dest, f)).equals(readFileSync(join(src, f))), f);
    writeFileSync(join(dest, 'extra', 'notes.txt'), 'tampered');
    const again = await lora(['pull', 'nlp/support-bot@1', dest]);
    assert.match(again.out, /\(1 downloaded, 2 already there\)/);
    assert.equal(readFileSync(join(dest, 'extra', 'notes.txt'), 'utf8'), 'trained on tickets');
  });

  it('searches, tags, traces lineage as a tree, and yanks', async () => {
    assert.match((await lora(['search', 'support'])).out, /nlp\/support-bot\s+@2 dora r=16/);
    assert.equal((await lora(['tag', 'nlp/support-bot', 'canary', '2'])).out.trim(), 'nlp/support-bot:canary -> 2');
    assert.equal((await lora(['repo', 'create', 'nlp/small', '--base-model', 'meta-llama/Llama-3.2-1B'])).code, 0);
    assert.equal((await lora(['push', src, 'nlp/small', '--parent', 'nlp/support-bot@1', '--relation', 'compressed_from'])).code, 0);
    const tree = await lora(['lineage', 'nlp/small@1']);
    assert.equal(
      tree.out.trim(),
      ['nlp/small@1', '└─ compressed_from nlp/support-bot@1', '   └─ trained_from hf:meta-llama/Llama-3.2-1B'].join('\n'),
    );
    const down = await lora(['lineage', 'nlp/support-bot@1', '--descendants']);
    assert.match(down.out, /└─ compressed_from nlp\/small@1/);
    const y = await lora(['yank', 'nlp/support-bot@2', '--reason', 'bad data']);
    assert.equal(y.code, 69, 'yank needs an admin-scoped token');
  });

  it('submits a job, lists it, follows its progress to the end, and cancels another', async () => {
    const example = readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', 'adapterjob-train-lora.yaml'), 'utf8').replace(
      /repository: .*/,
      'repository: nlp/support-bot',
    );
    writeFileSync(join(work, 'job.yaml'), example);
    const submitted = await lora(['jobs', 'submit', 'job.yaml']);
    assert.equal(submitted.code, 0, submitted.err);
    const id = submitted.out.split(/\s+/)[0] as string;
    assert.match(submitted.out, /AdapterJob .* queued/);
    assert.match((await lora(['jobs', 'list'])).out, new RegExp(`${id}\\s+AdapterJob`));
    // Report progress only once the watcher is following (it prints the queued state first).
    const watcher = spawn(process.execPath, [cli, 'jobs', 'watch', id], {
      cwd: work,
      env: { ...process.env, LOWRANK_REGISTRY: reg.base, LOWRANK_CONFIG_DIR: join(work, 'config'), LOWRANK_TOKEN: '' },
    });
    let watchedOut = '';
    await new Promise<void>((resolve) =>
      watcher.stdout.on('data', (d: Buffer) => {
        watchedOut += d.toString();
        if (watchedOut.includes('queued')) resolve();
      }),
    );
    const watching = new Promise<{ code: number; out: string; err: string }>((resolve) =>
      watcher.on('close', (code) => resolve({ code: code ?? 1, out: watchedOut, err: '' })),
    );
    const report = (body: unknown) =>
      fetch(`${reg.base}/v1/jobs/${id}/progress`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    for (const b of [
      { status: 'running', progress: { step: 5, total: 10, loss: 1.25 } },
      { status: 'succeeded', progress: { step: 10, total: 10, loss: 0.5 } },
    ]) {
      assert.equal((await report(b)).status, 200);
      await new Promise((r) => setTimeout(r, 100));
    }
    const watched = await watching;
    assert.equal(watched.code, 0, watched.err);
    assert.deepEqual(watched.out.trim().split('\n'), ['queued', 'running step 5/10 loss 1.2500', 'succeeded step 10/10 loss 0.5000']);
    // Log lines appended by whoever ran the worker, printed in order (and all of them when following an ended job).
    const append = await fetch(`${reg.base}/v1/jobs/${id}/logs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        lines: [
          { stream: 'stdout', text: 'step 5' },
          { stream: 'stderr', text: 'step 10' },
        ],
      }),
    });
    assert.equal(append.status, 204);
    assert.deepEqual((await lora(['jobs', 'logs', id])).out.trim().split('\n'), ['step 5', 'step 10']);
    assert.deepEqual((await lora(['jobs', 'logs', '--follow', id])).out.trim().split('\n'), ['step 5', 'step 10']);
    const other = (await lora(['jobs', 'submit', 'job.yaml'])).out.split(/\s+/)[0] as string;
    assert.equal((await lora(['jobs', 'cancel', other])).out.trim(), `${other} cancelled`);
    const watchCancelled = await lora(['jobs', 'watch', other]);
    assert.equal(watchCancelled.code, 1, 'a job that did not succeed is a failure for scripts');
    const bad = await lora(['jobs', 'submit', 'adapter']);
    assert.equal(bad.code, 65);
  });

  it('fails clearly with distinct exit codes', async () => {
    const missing = await lora(['pull', 'nlp/nothing']);
    assert.equal(missing.code, 69);
    assert.match(missing.err, /repository nlp\/nothing not found/);
    const bad = await lora(['pull', 'Not A Ref']);
    assert.equal(bad.code, 65);
    assert.match(bad.err, /not a repository reference; write namespace\/name/);
    assert.equal((await lora(['frobnicate'])).code, 64);
    const down = await lora(['whoami'], { LOWRANK_REGISTRY: 'http://127.0.0.1:1' });
    assert.equal(down.code, 75);
    assert.match(down.err, /cannot reach the registry at http:\/\/127.0.0.1:1/);
  });
});
