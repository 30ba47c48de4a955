/** The registry app over real HTTP, against the real PostgreSQL and Redis of `npm test`. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { parse } from 'yaml';
import { startRegistry } from './support/app.ts';

const example = parse(readFileSync(join(import.meta.dirname, '..', '..', 'crds', 'examples', 'adapterjob-train-lora.yaml'), 'utf8'));
let base: string;

before(async () => {
  base = (await startRegistry()).base;
});

/** Response bodies are probed loosely: their shapes are what these tests check. */
const json = (res: Response): Promise<any> => res.json();
const post = (path: string, body: string, type = 'application/json') =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': type }, body });

describe('registry app', () => {
  it('answers liveness and readiness with both dependencies checked', async () => {
    assert.deepEqual(await json(await fetch(`${base}/healthz`)), { status: 'ok' });
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await json(ready), { status: 'ok', checks: { postgres: 'ok', redis: 'ok' } });
  });

  it('reports not ready, as a problem, when Redis is gone', async () => {
    const gone = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    gone.on('error', () => {}); // expected: nothing listens there
    const other = await startRegistry({ redis: gone });
    const res = await fetch(`${other.base}/readyz`);
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const body = await json(res);
    assert.equal(body.code, 'unavailable');
    assert.match(body.detail, /redis/);
  });

  it('serves its OpenAPI 3.1 document and the job schemas', async () => {
    const doc = await json(await fetch(`${base}/v1/openapi.json`));
    assert.equal(doc.openapi, '3.1.0');
    assert.ok(doc.paths['/v1/jobs:validate']);
    const list = await json(await fetch(`${base}/v1/schemas`));
    assert.deepEqual(list.items.map((i: { kind: string }) => i.kind).sort(), ['AdapterJob', 'AdapterMerge', 'CompressionJob']);
    const schema = await json(await fetch(`${base}/v1/schemas/AdapterMerge`));
    assert.equal(schema.type, 'object');
    assert.ok(schema.properties.spec);
    const missing = await fetch(`${base}/v1/schemas/Nope`);
    assert.equal(missing.status, 404);
    assert.equal((await json(missing)).code, 'not_found');
  });

  it('validates a job with the shared validator and returns it defaulted', async () => {
    const res = await post('/v1/jobs:validate', JSON.stringify(example));
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.equal(body.valid, true);
    assert.equal(body.resource.kind, 'AdapterJob');
    assert.equal(body.resource.spec.mode, example.spec.mode);
  });

  it('accepts the short {kind, spec} form', async () => {
    const res = await post('/v1/jobs:validate', JSON.stringify({ kind: example.kind, spec: example.spec }));
    assert.equal(res.status, 200);
    assert.equal((await json(res)).resource.apiVersion, 'lora.lowrank.dev/v1alpha1');
  });

  it('answers an invalid job with 422 problem+json listing each field error', async () => {
    const res = await post('/v1/jobs:validate', JSON.stringify({ ...example, spec: { ...example.spec, mode: 'finetune', bogus: 1 } }));
    assert.equal(res.status, 422);
    const body = await json(res);
    assert.equal(body.code, 'invalid_spec');
    assert.match(body.detail, /^job is invalid: 2 problems to fix$/);
    // As the apiserver does: the enum error blocks the CEL rules, and a root entry says so.
    assert.deepEqual(body.errors.map((e: { path: string }) => e.path).sort(), ['', 'spec.bogus', 'spec.mode']);
  });

  it('answers malformed JSON, wrong content type and oversize bodies with clear client errors', async () => {
    const bad = await post('/v1/jobs:validate', '{"kind": ');
    assert.equal(bad.status, 400);
    assert.match((await json(bad)).detail, /not valid JSON/);
    const text = await post('/v1/jobs:validate', 'kind: AdapterJob', 'text/yaml');
    assert.equal(text.status, 400);
    assert.match((await json(text)).detail, /Content-Type: application\/json/);
    const big = await post('/v1/jobs:validate', JSON.stringify({ kind: 'AdapterJob', pad: 'x'.repeat(1_100_000) }));
    assert.equal(big.status, 413);
    assert.equal((await json(big)).code, 'payload_too_large');
  });

  it('answers unknown routes with a problem', async () => {
    const res = await fetch(`${base}/v1/nothing`);
    assert.equal(res.status, 404);
    assert.equal((await json(res)).code, 'not_found');
  });
});
