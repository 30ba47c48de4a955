/** setTag, deleteTag, yankVersion: the mutable parts of a repository. */
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import { type Context, paramsOf, principalOf, repositoryFor } from './context.ts';
import { resolveVersion } from './versions.ts';
import { versionInclude, versionView } from './views.ts';

export function setTag(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'write');
    const { tag } = paramsOf(res);
    const { version: ref } = req.body as { version: number | string };
    const version = await resolveVersion(ctx, repo, String(ref));
    if (version.yankedAt)
      throw new LowrankError(
        'conflict',
        `${repo.namespace}/${repo.name}@${version.number} is yanked (${version.yankReason}); tag another version`,
      );
    const principal = principalOf(res);
    await ctx.prisma.$transaction([
      ctx.prisma.tag.upsert({
        where: { repositoryId_name: { repositoryId: repo.id, name: tag as string } },
        create: { repositoryId: repo.id, name: tag as string, versionId: version.id, updatedById: principal?.userId ?? null },
        update: { versionId: version.id, updatedById: principal?.userId ?? null },
      }),
      ctx.prisma.auditEvent.create({
        data: {
          actorId: principal?.userId ?? null,
          tokenId: principal?.tokenId ?? null,
          action: 'tag.set',
          target: `${repo.namespace}/${repo.name}:${tag}`,
          details: { version: version.number },
        },
      }),
    ]);
    res.json({ tag, version: version.number });
  };
}

export function deleteTag(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await repositoryFor(ctx, res, 'write');
    const { tag } = paramsOf(res);
    if (tag === 'latest') throw new LowrankError('invalid_request', 'the latest tag follows pushes and cannot be deleted');
    const gone = await ctx.prisma.tag.deleteMany({ where: { repositoryId: repo.id, name: tag as string } });
    if (gone.count === 0) throw new LowrankError('not_found', `${repo.namespace}/${repo.name} has no tag "${tag}"`);
    const principal = principalOf(res);
    await ctx.prisma.auditEvent.create({
      data: {
        actorId: principal?.userId ?? null,
        tokenId: principal?.tokenId ?? null,
        action: 'tag.delete',
        target: `${repo.namespace}/${repo.name}:${tag}`,
      },
    });
    res.status(204).end();
  };
}

/**
 * Yanking marks a version as not to be used (leaked data, a bad merge) without deleting it:
 * lineage stays intact, pulls by number still work (clients see `yanked`), tags move off it,
 * and its blobs stay as long as any other version uses them.
 */
export function yankVersion(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await repositoryFor(ctx, res, 'admin');
    const version = await resolveVersion(ctx, repo, paramsOf(res).ref as string);
    if (version.yankedAt) throw new LowrankError('conflict', `${repo.namespace}/${repo.name}@${version.number} is already yanked`);
    const { reason } = req.body as { reason: string };
    const principal = principalOf(res);
    await ctx.prisma.$transaction(async (tx) => {
      await tx.version.update({ where: { id: version.id }, data: { yankedAt: new Date(), yankReason: reason } });
      // Tags must not point at a yanked version: `latest` falls back to the newest live one.
      const live = await tx.version.findFirst({ where: { repositoryId: repo.id, yankedAt: null }, orderBy: { number: 'desc' } });
      await tx.tag.deleteMany({ where: { versionId: version.id, name: { not: 'latest' } } });
      if (live)
        await tx.tag.updateMany({ where: { repositoryId: repo.id, name: 'latest', versionId: version.id }, data: { versionId: live.id } });
      else await tx.tag.deleteMany({ where: { repositoryId: repo.id, name: 'latest' } });
      await tx.auditEvent.create({
        data: {
          actorId: principal?.userId ?? null,
          tokenId: principal?.tokenId ?? null,
          action: 'version.yank',
          target: `${repo.namespace}/${repo.name}@${version.number}`,
          details: { reason },
        },
      });
    });
    res.json(versionView(await ctx.prisma.version.findUniqueOrThrow({ where: { id: version.id }, include: versionInclude })));
  };
}
