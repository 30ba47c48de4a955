/** The OpenAPI document is valid OpenAPI 3.1, and complete enough to drive routing, validation and the auth walk. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { validate } from '@scalar/openapi-parser';
import { OPENAPI_PATH, openapiDocument, operations } from '../src/openapi/document.ts';

describe('openapi.yaml', () => {
  it('is valid OpenAPI 3.1 (the lint CI runs)', async () => {
    const result = await validate(readFileSync(OPENAPI_PATH, 'utf8'));
    assert.deepEqual(result.errors ?? [], []);
    assert.equal(result.valid, true);
  });

  it('gives every operation a unique operationId, an auth class and documented errors', () => {
    const ops = operations();
    assert.equal(new Set(ops.map((o) => o.operationId)).size, ops.length);
    for (const op of ops) {
      assert.ok(['none', 'user', 'read', 'write', 'admin', 'site'].includes(op.auth), `${op.operationId}: x-lowrank-auth`);
      const operation = openapiDocument.paths[op.path]?.[op.method] as { responses: Record<string, unknown> } | undefined;
      assert.ok(operation, `${op.operationId} is in the document`);
      const { responses } = operation;
      if (op.auth !== 'none') assert.ok(responses['401'], `${op.operationId} documents 401`);
      if (op.requestSchema) assert.ok(responses['400'] ?? responses['422'], `${op.operationId} documents its validation errors`);
    }
  });
});
