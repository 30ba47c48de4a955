import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { asLowrankError, ERROR_CODES, LowrankError } from '../src/errors.ts';
import { createLogger } from '../src/log.ts';

describe('LowrankError', () => {
  it('renders RFC 9457 problem+json with a stable code and field errors', () => {
    const err = new LowrankError('invalid_spec', 'AdapterJob is invalid', { errors: [{ path: 'spec.mode', message: 'Required value' }] });
    assert.deepEqual(err.toProblem(), {
      type: 'https://lowrank.dev/problems/invalid_spec',
      title: 'invalid spec',
      status: 422,
      code: 'invalid_spec',
      detail: 'AdapterJob is invalid',
      errors: [{ path: 'spec.mode', message: 'Required value' }],
    });
    assert.equal(err.toText(), 'AdapterJob is invalid\n  spec.mode: Required value');
  });
  it('maps every code to an HTTP status', () => {
    for (const [code, status] of Object.entries(ERROR_CODES))
      assert.equal(new LowrankError(code as keyof typeof ERROR_CODES, 'x').status, status);
  });
  it('wraps foreign errors as internal, keeping the cause', () => {
    const cause = new TypeError('boom');
    const e = asLowrankError(cause);
    assert.equal(e.code, 'internal');
    assert.equal(e.cause, cause);
  });
});

describe('createLogger', () => {
  it('writes one JSON object per line with level, time, service and fields', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...chunk.toString().trim().split('\n'));
        cb();
      },
    });
    const log = createLogger('unit-test', sink);
    log.child({ job: 'j1' }).warn({ step: 3 }, 'slow step');
    assert.equal(lines.length, 1);
    const rec = JSON.parse(lines[0] ?? '{}');
    assert.equal(rec.level, 'warn');
    assert.equal(rec.service, 'unit-test');
    assert.equal(rec.job, 'j1');
    assert.equal(rec.step, 3);
    assert.equal(rec.msg, 'slow step');
    assert.match(rec.time, /^\d{4}-\d\d-\d\dT/);
  });
});
