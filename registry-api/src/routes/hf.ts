/**
 * The Hugging Face-compatible read API: enough of the Hub's `/api/models/...` and
 * `/{repo}/resolve/{revision}/{path}` that huggingface_hub (snapshot_download,
 * hf_hub_download) and PEFT (PeftModel.from_pretrained) fetch versions unchanged, with
 * `endpoint=`/HF_ENDPOINT pointing here and a registry token as the HF token.
 *
 * Revisions: "main" is the `latest` tag; a version number or tag as in the REST API;
 * or the version's 40-hex commit id (what the Hub calls `sha`).
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { LowrankError } from '@lowrank/crds/errors';
import type { RequestHandler, Response } from 'express';
import type { Repository } from '../generated/prisma/client.ts';
import { type Context, paramsOf, repositoryFor } from './context.ts';
import { resolveVersion } from './versions.ts';

type HubVersion = Awaited<ReturnType<typeof resolveVersion>>;

/**
 * The model card of a version without its own README.md: Hub metadata (base_model,
 * base_model_relation, library_name, tags) so that a mirror on the Hub keeps the model
 * tree, then what it is, where it came from, and how to load it.
 */
export function modelCard(repo: Repository, version: HubVersion): string {
  const id = `${repo.namespace}/${repo.name}`;
  const lineage = version.parents.map(
    (p) =>
      `- ${p.relation.replaceAll('_', ' ')} ${p.parent ? `${p.parent.repository.namespace}/${p.parent.repository.name}@${p.parent.number}` : (p.parentRef ?? '')}${p.weight === null ? '' : ` (weight ${p.weight})`}`,
  );
  return [
    '---',
    `base_model: ${repo.baseModel}`,
    'base_model_relation: adapter',
    'library_name: peft',
    'tags:',
    ...['peft', 'lora', ...repo.taskTags].map((t) => `- ${t}`),
    '---',
    '',
    `# ${id} (version ${version.number})`,
    '',
    repo.description || `A LoRA adapter for ${repo.baseModel}.`,
    '',
    ...(version.method ? [`Method: ${version.method}${version.rank ? `, rank ${version.rank}` : ''}.`, ''] : []),
    ...(lineage.length > 0 ? ['## Lineage', '', ...lineage, ''] : []),
    '## Use',
    '',
    '```python',
    'from peft import PeftModel',
    'from transformers import AutoModelForCausalLM',
    '',
    `base = AutoModelForCausalLM.from_pretrained("${repo.baseModel}")`,
    `model = PeftModel.from_pretrained(base, "${id}", revision="${version.number}")`,
    '```',
    '',
  ].join('\n');
}

const gitBlobId = (content: Buffer) => createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');

/** The generated card, when the version has no README.md of its own. */
function virtualCard(repo: Repository, version: HubVersion): Buffer | undefined {
  return version.files.some((f) => f.path === 'README.md') ? undefined : Buffer.from(modelCard(repo, version));
}

/** A stable 40-hex id per version, as the Hub's commit sha. */
export const commitOf = (versionId: string) => createHash('sha1').update(`lowrank-version:${versionId}`).digest('hex');

/** Hub clients switch on X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound). */
function hubError(res: Response, code: string, err: LowrankError): never {
  res.set('X-Error-Code', code).set('X-Error-Message', err.message);
  throw err;
}

async function hubRepository(ctx: Context, res: Response): Promise<Repository> {
  try {
    return await repositoryFor(ctx, res, 'read');
  } catch (err) {
    if (err instanceof LowrankError && (err.code === 'not_found' || err.code === 'unauthorized')) hubError(res, 'RepoNotFound', err);
    throw err;
  }
}

async function hubVersion(ctx: Context, res: Response, repo: Repository, revision: string) {
  try {
    if (/^[0-9a-f]{40}$/.test(revision)) {
      const versions = await ctx.prisma.version.findMany({ where: { repositoryId: repo.id }, select: { id: true, number: true } });
      const match = versions.find((v) => commitOf(v.id) === revision);
      if (!match) throw new LowrankError('not_found', `${repo.namespace}/${repo.name} has no commit ${revision}`);
      return await resolveVersion(ctx, repo, String(match.number));
    }
    return await resolveVersion(ctx, repo, revision === 'main' ? 'latest' : revision);
  } catch (err) {
    if (err instanceof LowrankError && err.code === 'not_found') hubError(res, 'RevisionNotFound', err);
    throw err;
  }
}

export function hubModelInfo(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await hubRepository(ctx, res);
    const version = await hubVersion(ctx, res, repo, paramsOf(res).revision ?? 'main');
    const id = `${repo.namespace}/${repo.name}`;
    res.json({
      _id: version.id,
      id,
      modelId: id,
      sha: commitOf(version.id),
      private: repo.visibility !== 'public',
      disabled: false,
      gated: false,
      downloads: 0,
      likes: 0,
      library_name: 'peft',
      tags: ['peft', 'lora', ...repo.taskTags],
      createdAt: repo.createdAt.toISOString(),
      lastModified: version.createdAt.toISOString(),
      cardData: { base_model: repo.baseModel, base_model_relation: 'adapter', library_name: 'peft' },
      siblings: [...version.files.map((f) => ({ rfilename: f.path })), ...(virtualCard(repo, version) ? [{ rfilename: 'README.md' }] : [])],
    });
  };
}

export function hubTree(ctx: Context): RequestHandler {
  return async (_req, res) => {
    const repo = await hubRepository(ctx, res);
    const { revision, path } = paramsOf(res);
    const version = await hubVersion(ctx, res, repo, revision as string);
    const prefix = path ? `${path.replace(/\/$/, '')}/` : '';
    // A file's own path lists that file, as a folder's lists its contents.
    const files = version.files.filter((f) => f.path.startsWith(prefix) || f.path === path);
    if (path && files.length === 0)
      hubError(
        res,
        'EntryNotFound',
        new LowrankError('not_found', `no folder "${path}" in ${repo.namespace}/${repo.name}@${version.number}`),
      );
    const folders = new Set<string>();
    for (const f of files) {
      if (!f.path.startsWith(prefix)) continue;
      const parts = f.path.slice(prefix.length).split('/');
      for (let i = 1; i < parts.length; i++) folders.add(prefix + parts.slice(0, i).join('/'));
    }
    const card = !path ? virtualCard(repo, version) : undefined;
    res.json([
      ...(card ? [{ type: 'file', path: 'README.md', size: card.length, oid: gitBlobId(card) }] : []),
      ...[...folders]
        .sort()
        .map((p) => ({ type: 'directory', path: p, oid: createHash('sha1').update(`tree:${version.id}:${p}`).digest('hex'), size: 0 })),
      ...files.map((f) => ({
        type: 'file',
        path: f.path,
        size: Number(f.size),
        // The Hub's oid is a git blob id; ours is derived from the content digest, also stable.
        oid: createHash('sha1').update(f.blobDigest).digest('hex'),
        lfs: { oid: f.blobDigest.slice('sha256:'.length), size: Number(f.size), pointerSize: 134 },
      })),
    ]);
  };
}

export function hubResolve(ctx: Context): RequestHandler {
  return async (req, res) => {
    const repo = await hubRepository(ctx, res);
    const { revision, path } = paramsOf(res);
    const version = await hubVersion(ctx, res, repo, revision as string);
    const file = version.files.find((f) => f.path === path);
    const card = !file && path === 'README.md' ? virtualCard(repo, version) : undefined;
    if (card) {
      res.set({
        'X-Repo-Commit': commitOf(version.id),
        ETag: `"${gitBlobId(card)}"`,
        'Content-Length': String(card.length),
        'Content-Type': 'text/markdown; charset=utf-8',
      });
      if (req.method === 'HEAD') res.status(200).end();
      else res.status(200).end(card);
      return;
    }
    if (!file)
      hubError(
        res,
        'EntryNotFound',
        new LowrankError('not_found', `${repo.namespace}/${repo.name}@${version.number} has no file "${path}"`),
      );
    const sha256 = file.blobDigest.slice('sha256:'.length);
    res.set({
      'X-Repo-Commit': commitOf(version.id),
      'X-Linked-Etag': `"${sha256}"`,
      'X-Linked-Size': String(file.size),
      ETag: `"${sha256}"`,
      'Content-Length': String(file.size),
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
    });
    if (req.method === 'HEAD') {
      res.status(200).end();
      return;
    }
    await pipeline(await ctx.blobs.get(file.blobDigest), res);
  };
}
