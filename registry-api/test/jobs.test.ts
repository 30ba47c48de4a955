/**
 * Jobs over REST on real PostgreSQL and Redis: validated by the shared job schema, queued
 * in bullmq for the local executor, progress reported by the worker and streamed to
 * clients as Server-Sent Events, cancellation.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { serviceEnv } from '@lowrank/e2e/env';
import { Queue } from 'bullmq';
import { parse } from 'yaml';
import { createToken } from '../src/auth/tokens.ts';
import { JOB_QUEUE } from '../src/jobs/queue.ts';
import { startRegistry, type TestRegistry } from './support/app.ts';

const example = parse(readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', 'adapterjob-train-lora.yaml'), 'utf8'));
const job = (repository = 'nlp/bot') => ({ kind: example.kind, spec: { ...example.spec, output: { repository } } });
let reg: TestRegistry;
const tok = { ada: '', bob: '' };

before(async () => {
  reg = await startRegistry();
  const org = await reg.prisma.organization.create({ data: { name: 'acme' } });
  const nlp = await reg.prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const vision = await reg.prisma.team.create({ data: { name: 'vision', organizationId: org.id } });
  const ada = await reg.prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id } } } });
  const bob = await reg.prisma.user.create({ data: { handle: 'bob', memberships: { create: { teamId: vision.id } } } });
  tok.ada = (await createToken(reg.prisma, { userId: ada.id, name: 't', scope: 'write' })).token;
  tok.bob = (await createToken(reg.prisma, { userId: bob.id, name: 't', scope: 'write' })).token;
});

const call = (who: keyof typeof tok, method: string, path: string, body?: unknown) =>
  fetch(`${reg.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${tok[who]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
const json = (r: Response): Promise<any> => r.json();

describe('jobs', () => {
  it('queues a valid job for the local executor, defaulted, and records it', async () => {
    const r = await call('ada', 'POST', '/v1/jobs', job());
    assert.equal(r.status, 201);
    const j = await json(r);
    assert.equal(j.status, 'queued');
    assert.equal(j.kind, 'AdapterJob');
    assert.equal(r.headers.get('location'), `/v1/jobs/${j.id}`);
    assert.equal(j.spec.suspend, false, 'defaults applied');
    assert.equal(j.spec.deterministic, true, 'defaults applied');
    const queue = new Queue(JOB_QUEUE, { connection: { url: serviceEnv('REDIS_URL') } });
    const queued = await queue.getJob(j.id);
    await queue.close();
    assert.deepEqual(queued?.data, { jobId: j.id });
    assert.equal(
      (await json(await call('ada', 'GET', '/v1/jobs'))).items.some((x: { id: string }) => x.id === j.id),
      true,
    );
  });

  it('records a job for an external runner (the operator) without queueing it', async () => {
    const r = await call('ada', 'POST', '/v1/jobs?executor=external', job());
    assert.equal(r.status, 201);
    const j = await json(r);
    assert.equal(j.status, 'queued');
    const queue = new Queue(JOB_QUEUE, { connection: { url: serviceEnv('REDIS_URL') } });
    assert.equal(await queue.getJob(j.id), undefined, 'not for the local executor');
    await queue.close();
    // Its worker reports to the record like any other.
    assert.equal((await call('ada', 'POST', `/v1/jobs/${j.id}/progress`, { status: 'running', progress: { step: 1 } })).status, 200);
    assert.equal((await call('ada', 'POST', '/v1/jobs?executor=kubelet', job())).status, 400);
  });

  it('answers an invalid job with every field error, and another team with 403', async () => {
    const bad = await call('ada', 'POST', '/v1/jobs', { kind: 'AdapterJob', spec: { ...job().spec, mode: 'finetune' } });
    assert.equal(bad.status, 422);
    assert.ok((await json(bad)).errors.some((e: { path: string }) => e.path === 'spec.mode'));
    assert.equal((await call('bob', 'POST', '/v1/jobs', job())).status, 403);
  });

  it('streams progress reported by the worker as Server-Sent Events until the job ends', async () => {
    const { id } = await json(await call('ada', 'POST', '/v1/jobs', job()));
    const res = await call('ada', 'GET', `/v1/jobs/${id}/events`);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events: { status: string; progress: { step?: number } }[] = [];
    const reading = (async () => {
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = frame.split('\n').find((l) => l.startsWith('data: '));
          if (data) events.push(JSON.parse(data.slice(6)));
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 100));
    for (const update of [
      { status: 'running', progress: { step: 1, total: 3, loss: 2.1 } },
      { progress: { step: 2, total: 3, loss: 1.7 } },
      { status: 'succeeded', progress: { step: 3, total: 3, loss: 1.5 } },
    ]) {
      assert.equal((await call('ada', 'POST', `/v1/jobs/${id}/progress`, update)).status, 200);
      await new Promise((r) => setTimeout(r, 50));
    }
    await reading; // the server ends the stream when the job ends
    assert.equal(events[0]?.status, 'queued');
    assert.deepEqual(
      events.slice(1).map((e) => `${e.status}:${e.progress.step}`),
      ['running:1', 'running:2', 'succeeded:3'],
    );
    const done = await json(await call('ada', 'GET', `/v1/jobs/${id}`));
    assert.equal(done.attempts, 1);
    assert.ok(done.startedAt && done.finishedAt);
    assert.equal(
      (await call('ada', 'POST', `/v1/jobs/${id}/progress`, { status: 'running' })).status,
      409,
      'a finished job stays finished',
    );
  });

  it('cancels a queued job: off the queue, and finished', async () => {
    const { id } = await json(await call('ada', 'POST', '/v1/jobs', job()));
    assert.equal((await call('bob', 'POST', `/v1/jobs/${id}:cancel`)).status, 404);
    const r = await call('ada', 'POST', `/v1/jobs/${id}:cancel`);
    assert.equal((await json(r)).status, 'cancelled');
    const queue = new Queue(JOB_QUEUE, { connection: { url: serviceEnv('REDIS_URL') } });
    assert.equal(await queue.getJob(id), undefined);
    await queue.close();
    assert.equal((await call('ada', 'POST', `/v1/jobs/${id}:cancel`)).status, 409);
  });
});
