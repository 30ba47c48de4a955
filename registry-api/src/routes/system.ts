/** getHealth, getReadiness, getOpenApi, listJobSchemas, getJobSchema, validateJob. */
import { asResource, crdInfo, JOB_KINDS, problemCount, validateResource } from '@lowrank/crds';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import type { Pool } from 'pg';
import { openapiDocument } from '../openapi/document.ts';
import { paramsOf } from './context.ts';

async function check(name: string, probe: () => Promise<unknown>): Promise<[string, string]> {
  try {
    await probe();
    return [name, 'ok'];
  } catch (err) {
    return [name, err instanceof Error ? err.message : String(err)];
  }
}

export const getHealth: RequestHandler = (_req, res) => {
  res.json({ status: 'ok' });
};

export function getReadiness(db: Pool, redis: Redis): RequestHandler {
  return async (_req, res) => {
    const checks = Object.fromEntries(
      await Promise.all([check('postgres', () => db.query('select 1')), check('redis', () => redis.ping())]),
    );
    const failed = Object.entries(checks).filter(([, v]) => v !== 'ok');
    if (failed.length > 0) throw new LowrankError('unavailable', `not ready: ${failed.map(([k, v]) => `${k}: ${v}`).join('; ')}`);
    res.json({ status: 'ok', checks });
  };
}

export const getOpenApi: RequestHandler = (_req, res) => {
  res.json(openapiDocument);
};

export const listJobSchemas: RequestHandler = (_req, res) => {
  res.json({
    items: JOB_KINDS.map((kind) => {
      const info = crdInfo(kind);
      return {
        kind,
        apiVersion: `${info.group}/${info.version}`,
        plural: info.plural,
        shortNames: info.shortNames,
        schema: `/v1/schemas/${kind}`,
      };
    }),
  });
};

export const getJobSchema: RequestHandler = (_req, res) => {
  const kind = JOB_KINDS.find((k) => k === paramsOf(res).kind);
  if (!kind) throw new LowrankError('not_found', `unknown job kind "${paramsOf(res).kind}"; kinds are ${JOB_KINDS.join(', ')}`);
  res.json(crdInfo(kind).schema);
};

export const validateJob: RequestHandler = (req, res) => {
  const result = validateResource(asResource(req.body, { generateName: 'job-' }));
  if (!result.ok) throw new LowrankError('invalid_spec', `job is invalid: ${problemCount(result.errors)}`, { errors: result.errors });
  res.json({ valid: true, resource: result.value });
};
