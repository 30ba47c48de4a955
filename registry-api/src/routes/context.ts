/** What route handlers share: the stores, and helpers to find what a request names and check access to it. */
import { LowrankError } from '@lowrank/crds/errors';
import type { Logger } from '@lowrank/crds/log';
import type { Response } from 'express';
import { type Action, decide } from '../auth/policy.ts';
import type { Principal } from '../auth/principal.ts';
import type { BlobStore } from '../blobs/store.ts';
import type { PrismaClient, Repository } from '../generated/prisma/client.ts';
import type { PostprocessQueue } from '../postprocess/queue.ts';

export interface Context {
  prisma: PrismaClient;
  blobs: BlobStore;
  log: Logger;
  /** Largest accepted blob upload, in bytes. */
  maxBlobBytes: number;
  postprocess?: PostprocessQueue;
}

export const principalOf = (res: Response) => (res.locals.principal ?? null) as Principal | null;
export const paramsOf = (res: Response) => res.locals.params as Record<string, string>;

/** Throws the policy's refusal as the matching problem. */
export function authorize(
  principal: Principal | null,
  action: Action,
  target?: { teamId: string; visibility: Repository['visibility'] },
  what = 'resource',
): void {
  const d = decide(principal, action, target);
  if (d.allowed) return;
  if (d.status === 401) throw new LowrankError('unauthorized', d.reason);
  if (d.status === 404) throw new LowrankError('not_found', `${what} not found`);
  throw new LowrankError('forbidden', d.reason);
}

/** The repository, if the caller may act on it; unknown repositories are 401 to anonymous callers, 404 otherwise. */
export async function repositoryFor(ctx: Context, res: Response, action: Action): Promise<Repository> {
  const { namespace, name } = paramsOf(res);
  const principal = principalOf(res);
  const what = `repository ${namespace}/${name}`;
  const repo = await ctx.prisma.repository.findUnique({
    where: { namespace_name: { namespace: namespace as string, name: name as string } },
  });
  if (!repo) {
    if (!principal) throw new LowrankError('unauthorized', 'sign in: send `Authorization: Bearer <token>`');
    throw new LowrankError('not_found', `${what} not found`);
  }
  authorize(principal, action, { teamId: repo.teamId, visibility: repo.visibility }, what);
  return repo;
}
