/** The registry users the worker tests act as: ada of team nlp (write) and a site admin (the executor's token). */
import { createToken } from '../../../registry-api/src/auth/tokens.ts';
import type { PrismaClient } from '../../../registry-api/src/generated/prisma/client.ts';

export async function seedNlpTeam(prisma: PrismaClient): Promise<{ ada: string; admin: string }> {
  const org = await prisma.organization.create({ data: { name: 'acme' } });
  const nlp = await prisma.team.create({ data: { name: 'nlp', organizationId: org.id } });
  const ada = await prisma.user.create({ data: { handle: 'ada', memberships: { create: { teamId: nlp.id } } } });
  const root = await prisma.user.create({ data: { handle: 'root', isAdmin: true } });
  return {
    ada: (await createToken(prisma, { userId: ada.id, name: 't', scope: 'write' })).token,
    admin: (await createToken(prisma, { userId: root.id, name: 'executor', scope: 'admin' })).token,
  };
}

/** JSON calls to the registry as one of those users: { status, body } (body null for 204). */
export function registryApi(base: () => string, tokens: { ada: string; admin: string }) {
  return (who: keyof typeof tokens, method: string, path: string, body?: unknown): Promise<any> =>
    fetch(`${base()}${path}`, {
      method,
      headers: { authorization: `Bearer ${tokens[who]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }).then(async (r) => ({ status: r.status, body: r.status === 204 ? null : await r.json() }));
}
