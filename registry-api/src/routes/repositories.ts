/** createRepository, getRepository. */
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import type { RepositoryCreate } from '../api-types.ts';
import { Prisma } from '../generated/prisma/client.ts';
import { authorize, type Context, principalOf, repositoryFor } from './context.ts';
import { repositoryView } from './views.ts';

export function createRepository(ctx: Context): RequestHandler {
  return async (req, res) => {
    const body = req.body as RepositoryCreate;
    const principal = principalOf(res);
    if (!principal) throw new LowrankError('unauthorized', 'sign in: send `Authorization: Bearer <token>`');
    const team = await ctx.prisma.team.findUnique({ where: { name: body.namespace } });
    if (!team) throw new LowrankError('not_found', `no team named "${body.namespace}"; repositories live in a team's namespace`);
    authorize(principal, 'write', { teamId: team.id, visibility: 'internal' }, `team ${body.namespace}`);
    try {
      const repo = await ctx.prisma.repository.create({
        data: {
          namespace: body.namespace,
          name: body.name,
          teamId: team.id,
          baseModel: body.baseModel,
          taskTags: body.taskTags ?? [],
          visibility: body.visibility ?? 'private',
          description: body.description ?? '',
        },
        include: { tags: { include: { version: true } } },
      });
      await ctx.prisma.auditEvent.create({
        data: {
          actorId: principal.userId,
          tokenId: principal.tokenId,
          action: 'repository.create',
          target: `${body.namespace}/${body.name}`,
        },
      });
      res.status(201).json(repositoryView(repo));
    } catch (err) {
      if (err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002') {
        throw new LowrankError('conflict', `repository ${body.namespace}/${body.name} already exists`);
      }
      throw err;
    }
  };
}

export function getRepository(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await repositoryFor(ctx, res, 'read');
    const full = await ctx.prisma.repository.findUniqueOrThrow({
      where: { id: repo.id },
      include: { tags: { include: { version: true } } },
    });
    res.json(repositoryView(full));
  };
}
