/** The registry's HTTP app: health, the OpenAPI document, job schemas and validation. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { asResource, crdInfo, JOB_KINDS, type JobKind, problemCount, validateResource } from '@lowrank/crds';
import { LowrankError } from '@lowrank/crds/errors';
import type { Logger } from '@lowrank/crds/log';
import express, { type Express } from 'express';
import type { Redis } from 'ioredis';
import type { Pool } from 'pg';
import { parse } from 'yaml';
import { errorHandler, notFound, sendProblem } from './problem.ts';

export interface AppDeps {
  db: Pool;
  redis: Redis;
  log: Logger;
}

const openapi = parse(readFileSync(join(import.meta.dirname, '..', 'openapi.yaml'), 'utf8')) as object;

async function check(name: string, probe: () => Promise<unknown>): Promise<[string, string]> {
  try {
    await probe();
    return [name, 'ok'];
  } catch (err) {
    return [name, err instanceof Error ? err.message : String(err)];
  }
}

export function createApp({ db, redis, log }: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(express.json({ limit: '1mb', type: ['application/json', 'application/*+json'] }));
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log.info({ method: req.method, path: req.path, status: res.statusCode, ms: Math.round(ms * 10) / 10 }, 'request');
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    const checks = Object.fromEntries(
      await Promise.all([check('postgres', () => db.query('select 1')), check('redis', () => redis.ping())]),
    );
    const failed = Object.entries(checks).filter(([, v]) => v !== 'ok');
    if (failed.length === 0) {
      res.json({ status: 'ok', checks });
      return;
    }
    sendProblem(res, new LowrankError('unavailable', `not ready: ${failed.map(([k, v]) => `${k}: ${v}`).join('; ')}`));
  });

  app.get('/v1/openapi.json', (_req, res) => {
    res.json(openapi);
  });

  app.get('/v1/schemas', (_req, res) => {
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
  });

  app.get('/v1/schemas/:kind', (req, res) => {
    const kind = JOB_KINDS.find((k) => k === req.params.kind);
    if (!kind) {
      sendProblem(res, new LowrankError('not_found', `unknown job kind "${req.params.kind}"; kinds are ${JOB_KINDS.join(', ')}`));
      return;
    }
    res.json(crdInfo(kind as JobKind).schema);
  });

  app.post('/v1/jobs\\:validate', (req, res) => {
    if (!req.is('application/json') && !req.is('application/*+json')) {
      sendProblem(res, new LowrankError('invalid_request', 'send the job as JSON with Content-Type: application/json'));
      return;
    }
    const result = validateResource(asResource(req.body, { generateName: 'job-' }));
    if (!result.ok) {
      sendProblem(res, new LowrankError('invalid_spec', `job is invalid: ${problemCount(result.errors)}`, { errors: result.errors }));
      return;
    }
    res.json({ valid: true, resource: result.value });
  });

  app.use(notFound);
  app.use(errorHandler(log));
  return app;
}
