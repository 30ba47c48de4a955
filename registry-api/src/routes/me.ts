/** getMe: what a token is, so clients (`lora login`) can check it before saving it. */
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler } from 'express';
import { type Context, principalOf } from './context.ts';

export function getMe(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const p = principalOf(res);
    if (!p) throw new LowrankError('unauthorized', 'sign in: send `Authorization: Bearer <token>`');
    const [teams, token] = await Promise.all([
      ctx.prisma.team.findMany({ where: { id: { in: [...p.teams.keys()] } } }),
      ctx.prisma.apiToken.findUniqueOrThrow({ where: { id: p.tokenId }, include: { team: true } }),
    ]);
    res.json({
      handle: p.handle,
      isAdmin: p.isAdmin,
      scope: p.scope,
      restrictedToTeam: token.team?.name ?? null,
      teams: teams.map((t) => ({ name: t.name, role: p.teams.get(t.id) })).sort((a, b) => a.name.localeCompare(b.name)),
      expiresAt: token.expiresAt?.toISOString() ?? null,
    });
  };
}
