/**
 * Request rate limits per caller (per token when signed in, per client address when not),
 * counted in Redis so every registry replica shares one budget. Only the API is limited
 * (not health checks or the web catalog's files). Over the limit: 429 problem+json (code rate_limited) with Retry-After and the
 * IETF RateLimit headers, which clients such as huggingface_hub back off on.
 */
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import type { Redis } from 'ioredis';
import { RedisStore } from 'rate-limit-redis';
import type { Principal } from './auth/principal.ts';

export interface RateLimitOptions {
  windowMs: number;
  /** Requests per window for a signed-in token. */
  perToken: number;
  /** Requests per window for an anonymous client address. */
  anonymous: number;
}

export function rateLimiter(redis: Redis, options: RateLimitOptions): RequestHandler {
  const principalOf = (res: { locals: Record<string, unknown> }) => res.locals.principal as Principal | null | undefined;
  return rateLimit({
    windowMs: options.windowMs,
    limit: (_req, res) => (principalOf(res) ? options.perToken : options.anonymous),
    keyGenerator: (req, res) => {
      const p = principalOf(res);
      return p ? `token:${p.tokenId}` : `ip:${ipKeyGenerator(req.ip ?? 'unknown')}`;
    },
    // The API only: health checks and the web catalog's static files are never limited.
    skip: (req) => !(req.path.startsWith('/v1/') || req.path.startsWith('/api/') || req.path.includes('/resolve/')),
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    store: new RedisStore({
      prefix: 'lowrank:ratelimit:',
      sendCommand: (command: string, ...args: string[]) => redis.call(command, ...args) as never,
    }),
    handler: (_req, res, next) => {
      const who = principalOf(res) ? 'this token' : 'this address';
      const limit = principalOf(res) ? options.perToken : options.anonymous;
      next(
        new LowrankError(
          'rate_limited',
          `too many requests: ${who} may make ${limit} per ${options.windowMs / 1000} s; retry after ${res.get('retry-after') ?? 'a moment'} s`,
        ),
      );
    },
  });
}
