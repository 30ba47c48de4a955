/**
 * Authorization, in one table-testable function. Rules:
 * - read: public repositories to anyone; internal ones to any signed-in caller; private
 *   ones to members of the owning team; site admins (admin-scoped) read everything.
 * - write (push versions, tags, jobs): a write- or admin-scoped token of a member of the
 *   owning team. admin (visibility, yank, delete): a team maintainer with an admin-scoped
 *   token, or a site admin. A team-restricted token never acts outside its team.
 * - site: site administration (users, teams, tokens of others): site admins only.
 */
import type { Visibility } from '../generated/prisma/client.ts';
import type { Principal } from './principal.ts';

export type Action = 'read' | 'write' | 'admin' | 'site';

export interface Target {
  teamId: string;
  visibility: Visibility;
}

export type Decision = { allowed: true } | { allowed: false; status: 401 | 403 | 404; reason: string };

const SCOPE_RANK = { read: 0, write: 1, admin: 2 } as const;
const NEEDED_SCOPE = { read: 'read', write: 'write', admin: 'admin', site: 'admin' } as const;

export function decide(p: Principal | null, action: Action, target?: Target): Decision {
  if (action === 'read' && target?.visibility === 'public') return { allowed: true };
  if (!p) return { allowed: false, status: 401, reason: 'sign in: send `Authorization: Bearer <token>`' };
  if (SCOPE_RANK[p.scope] < SCOPE_RANK[NEEDED_SCOPE[action]]) {
    return {
      allowed: false,
      status: 403,
      reason: `this token has scope ${p.scope}; ${action} needs a ${NEEDED_SCOPE[action]}-scoped token`,
    };
  }
  const siteAdmin = p.isAdmin && p.scope === 'admin' && p.tokenTeamId === null;
  if (action === 'site')
    return siteAdmin ? { allowed: true } : { allowed: false, status: 403, reason: 'site administration needs a site admin' };
  if (!target) return { allowed: true }; // actions on the caller's own resources
  if (p.tokenTeamId !== null && p.tokenTeamId !== target.teamId) {
    // Hide private repositories of other teams entirely.
    return target.visibility === 'private'
      ? { allowed: false, status: 404, reason: 'not found' }
      : action === 'read'
        ? { allowed: true }
        : { allowed: false, status: 403, reason: 'this token is restricted to another team' };
  }
  if (siteAdmin) return { allowed: true };
  const role = p.teams.get(target.teamId);
  if (action === 'read') {
    if (target.visibility === 'internal' || role) return { allowed: true };
    return { allowed: false, status: 404, reason: 'not found' };
  }
  if (!role) {
    return target.visibility === 'private'
      ? { allowed: false, status: 404, reason: 'not found' }
      : { allowed: false, status: 403, reason: 'only members of the owning team can change this repository' };
  }
  if (action === 'admin' && role !== 'maintainer')
    return { allowed: false, status: 403, reason: 'this needs a maintainer of the owning team' };
  return { allowed: true };
}
