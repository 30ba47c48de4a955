#!/usr/bin/env node
import { readFileSync } from 'node:fs';
/**
 * lora: the registry from the command line.
 *   lora login --registry URL --token TOKEN     lora whoami
 *   lora repo create ns/name --base-model M     lora push DIR ns/name [--tag T]...
 *   lora pull ns/name[@ref] [DIR]               lora show ns/name[@ref]
 *   lora search [QUERY] [--base-model ...]      lora lineage ns/name[@ref] [--descendants]
 *   lora tag ns/name TAG VERSION                lora yank ns/name@ref --reason R
 *   lora jobs submit FILE | list | watch ID | logs ID [--follow] | cancel ID
 * Exit status: 0 ok, 64 usage, 65 bad input, 69 not found / not allowed, 75 registry unavailable (retry), 1 other.
 */
import { LowrankError } from '@lowrank/crds/errors';
import { Command, CommanderError } from 'commander';
import { parse as parseYaml } from 'yaml';
import { parseRef, RegistryClient } from './client.ts';
import { loadConfig, saveConfig } from './config.ts';
import { type Graph, renderTree } from './lineage-tree.ts';
import { human } from './progress.ts';
import { pull, push } from './transfer.ts';

const out = (s: string): void => {
  process.stdout.write(`${s}\n`);
};
const client = () => new RegistryClient(loadConfig());
const collect = (v: string, acc: string[]) => [...acc, v];

const program = new Command('lora')
  .description('Push, pull, search and trace LoRA adapters in a lowrank registry.')
  .option('--json', 'print machine-readable JSON')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });
const json = () => program.opts<{ json?: boolean }>().json === true;

program
  .command('login')
  .description('check a token against the registry and save both (~/.config/lowrank/config.json, mode 0600)')
  .requiredOption('--token <token>', 'an API token (lrk_...)')
  .option('--registry <url>', 'registry URL', loadConfig().registry)
  .action(async (o: { token: string; registry: string }) => {
    const me = await new RegistryClient({ registry: o.registry, token: o.token }).json<{ handle: string; scope: string }>('GET', '/v1/me');
    const file = saveConfig({ registry: o.registry, token: o.token });
    out(`logged in to ${o.registry} as ${me.handle} (${me.scope} token); saved to ${file}`);
  });

program.command('whoami').action(async () => {
  const me = await client().json<{ handle: string; scope: string; teams: { name: string; role: string }[]; expiresAt: string | null }>(
    'GET',
    '/v1/me',
  );
  out(
    json()
      ? JSON.stringify(me)
      : `${me.handle} (${me.scope}; teams: ${me.teams.map((t) => `${t.name}:${t.role}`).join(', ') || 'none'}; expires ${me.expiresAt ?? 'never'})`,
  );
});

program
  .command('repo')
  .description('manage repositories')
  .command('create <repo>')
  .requiredOption('--base-model <id>', 'the base model the adapters are for')
  .option('--visibility <v>', 'private, internal or public', 'private')
  .option('--description <text>', 'what the adapters do', '')
  .option('--task <tag>', 'a task tag (repeatable)', collect, [])
  .action(async (repo: string, o: { baseModel: string; visibility: string; description: string; task: string[] }) => {
    const [namespace, name] = parseRef(repo).repo.split('/');
    await client().json('POST', '/v1/repos', {
      namespace,
      name,
      baseModel: o.baseModel,
      visibility: o.visibility,
      description: o.description,
      taskTags: o.task,
    });
    out(`created ${namespace}/${name}`);
  });

program
  .command('push <dir> <repo>')
  .description('push a PEFT adapter directory as a new version (only blobs the registry lacks are uploaded)')
  .option('--tag <tag>', 'also tag the version (repeatable)', collect, [])
  .option('--number <n>', 'the version number to create (conflict if it exists)')
  .option('--method <m>', 'method name (default: from adapter_config.json)')
  .option('--parent <ns/name@n>', 'a parent version in this registry')
  .option('--parent-ref <ref>', 'a parent outside the registry, e.g. hf:meta-llama/Llama-3.2-1B')
  .option('--relation <r>', 'relation to the parent', 'trained_from')
  .action(
    async (
      dir: string,
      repo: string,
      o: { tag: string[]; number?: string; method?: string; parent?: string; parentRef?: string; relation: string },
    ) => {
      const lineage =
        o.parent || o.parentRef ? [{ relation: o.relation, ...(o.parent ? { parent: o.parent } : { parentRef: o.parentRef }) }] : [];
      const r = await push(client(), dir, parseRef(repo).repo, {
        tags: o.tag,
        lineage,
        ...(o.number ? { number: Number(o.number) } : {}),
        ...(o.method ? { method: o.method } : {}),
      });
      out(json() ? JSON.stringify(r) : `pushed ${parseRef(repo).repo}@${r.number} (${r.uploaded} uploaded, ${r.skipped} already stored)`);
    },
  );

program
  .command('pull <ref> [dir]')
  .description('download a version (ns/name, ns/name@3, ns/name@prod) into a directory, verified; resumes')
  .action(async (ref: string, dir?: string) => {
    const { repo, ref: r } = parseRef(ref);
    const target = dir ?? repo.split('/')[1] ?? '.';
    const res = await pull(client(), repo, r, target);
    out(
      json()
        ? JSON.stringify(res)
        : `pulled ${repo}@${res.number} into ${target} (${res.downloaded} downloaded, ${res.kept} already there)`,
    );
  });

program
  .command('show <ref>')
  .description('a version: files, config, lineage, tags')
  .action(async (ref: string) => {
    const { repo, ref: r } = parseRef(ref);
    const v = await client().json<{
      number: number;
      method: string | null;
      rank: number | null;
      tags: string[];
      createdAt: string;
      yanked: { reason: string } | null;
      files: { path: string; size: number; digest: string }[];
      lineage: { relation: string; parent: string | null; parentRef: string | null }[];
    }>('GET', `/v1/repos/${repo}/versions/${encodeURIComponent(r)}`);
    if (json()) return out(JSON.stringify(v));
    out(
      `${repo}@${v.number}  ${v.method ?? ''}${v.rank ? ` r=${v.rank}` : ''}  tags: ${v.tags.join(', ') || '-'}  ${v.createdAt}${v.yanked ? `  YANKED: ${v.yanked.reason}` : ''}`,
    );
    for (const f of v.files) out(`  ${f.path.padEnd(40)} ${human(f.size).padStart(10)}  ${f.digest.slice(0, 19)}…`);
    for (const l of v.lineage) out(`  ${l.relation} ${l.parent ?? l.parentRef}`);
  });

program
  .command('search [query]')
  .description('full-text search with filters, over what you may read')
  .option('--base-model <id>')
  .option('--method <m>')
  .option('--rank <r>')
  .option('--tag <t>', 'task tag')
  .option('--team <t>')
  .option('--limit <n>', 'results', '20')
  .action(async (query: string | undefined, o: Record<string, string | undefined>) => {
    const params = new URLSearchParams();
    if (query) params.set('q', query);
    for (const [k, v] of Object.entries({
      baseModel: o.baseModel,
      method: o.method,
      rank: o.rank,
      tag: o.tag,
      team: o.team,
      limit: o.limit,
    }))
      if (v) params.set(k, v);
    const r = await client().json<{
      total: number;
      items: {
        namespace: string;
        name: string;
        baseModel: string;
        latest: { number: number; method: string | null; rank: number | null } | null;
        description: string;
      }[];
    }>('GET', `/v1/repos?${params}`);
    if (json()) return out(JSON.stringify(r));
    for (const i of r.items) {
      const latest = i.latest
        ? `@${i.latest.number} ${i.latest.method ?? ''}${i.latest.rank ? ` r=${i.latest.rank}` : ''}`
        : '(no versions)';
      out(`${`${i.namespace}/${i.name}`.padEnd(36)} ${latest.padEnd(20)} ${i.baseModel.padEnd(28)} ${i.description.slice(0, 50)}`);
    }
    out(`${r.items.length} of ${r.total}`);
  });

program
  .command('lineage <ref>')
  .description('where a version came from (or, with --descendants, what was made from it), as a tree')
  .option('--descendants', 'show what was made from it instead')
  .option('--depth <n>', 'levels', '8')
  .action(async (ref: string, o: { descendants?: boolean; depth: string }) => {
    const { repo, ref: r } = parseRef(ref);
    const direction = o.descendants ? 'descendants' : 'ancestors';
    const g = await client().json<Graph>(
      'GET',
      `/v1/repos/${repo}/versions/${encodeURIComponent(r)}/lineage?direction=${direction}&depth=${o.depth}`,
    );
    out(json() ? JSON.stringify(g) : renderTree(g, direction));
  });

program
  .command('tag <repo> <tag> <version>')
  .description('point a tag (e.g. prod) at a version')
  .action(async (repo: string, tag: string, version: string) => {
    const r = await client().json<{ tag: string; version: number }>('PUT', `/v1/repos/${parseRef(repo).repo}/tags/${tag}`, {
      version: /^\d+$/.test(version) ? Number(version) : version,
    });
    out(`${parseRef(repo).repo}:${r.tag} -> ${r.version}`);
  });

program
  .command('yank <ref>')
  .description('mark a version as not to be used, with a reason')
  .requiredOption('--reason <text>')
  .action(async (ref: string, o: { reason: string }) => {
    const { repo, ref: r } = parseRef(ref);
    const v = await client().json<{ number: number }>('POST', `/v1/repos/${repo}/versions/${encodeURIComponent(r)}:yank`, {
      reason: o.reason,
    });
    out(`yanked ${repo}@${v.number}`);
  });

const jobs = program.command('jobs').description('submit and follow jobs run by the platform');

jobs
  .command('submit <file>')
  .description('submit a job (an AdapterJob/AdapterMerge/CompressionJob resource, YAML or JSON); prints its id')
  .action(async (file: string) => {
    let body: unknown;
    try {
      body = parseYaml(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new LowrankError('invalid_file', `${file}: ${(err as Error).message}`);
    }
    const j = await client().json<{ id: string; kind: string; name: string; status: string }>('POST', '/v1/jobs', body);
    out(json() ? JSON.stringify(j) : `${j.id}  ${j.kind} ${j.name}  ${j.status}`);
  });

jobs
  .command('list')
  .option('--status <s>', 'queued, running, succeeded, failed or cancelled')
  .action(async (o: { status?: string }) => {
    const r = await client().json<{ items: { id: string; kind: string; name: string; status: string; createdAt: string }[] }>(
      'GET',
      `/v1/jobs${o.status ? `?status=${o.status}` : ''}`,
    );
    if (json()) return out(JSON.stringify(r));
    for (const j of r.items) out(`${j.id}  ${j.kind.padEnd(14)} ${j.name.padEnd(28)} ${j.status.padEnd(10)} ${j.createdAt}`);
  });

jobs
  .command('watch <id>')
  .description("follow a job's progress until it ends; exit status 0 only if it succeeded")
  .action(async (id: string) => {
    const c = client();
    const res = await c.request('GET', `/v1/jobs/${id}/events`);
    const decoder = new TextDecoder();
    let buf = '';
    let last: { status: string; error?: string | null } = { status: 'queued' };
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
        const data = buf
          .slice(0, i)
          .split('\n')
          .find((l) => l.startsWith('data: '));
        buf = buf.slice(i + 2);
        if (!data) continue;
        const j = JSON.parse(data.slice(6)) as { status: string; error: string | null; progress: Record<string, unknown> };
        last = j;
        const p = j.progress;
        const step = p.step !== undefined ? ` step ${p.step}${p.total !== undefined ? `/${p.total}` : ''}` : '';
        const loss = typeof p.loss === 'number' ? ` loss ${p.loss.toFixed(4)}` : '';
        out(json() ? JSON.stringify(j) : `${j.status}${step}${loss}${j.error ? ` error: ${j.error}` : ''}`);
      }
    }
    if (last.status !== 'succeeded') process.exitCode = 1;
  });

jobs
  .command('logs <id>')
  .description("print a job's log lines (every attempt); --follow keeps printing until the job ends")
  .option('-f, --follow', 'wait for new lines until the job ends')
  .action(async (id: string, o: { follow?: boolean }) => {
    const c = client();
    let since = 0;
    for (;;) {
      const page = await c.json<{ lines: { seq: number; attempt: number; stream: string; text: string }[]; next: number }>(
        'GET',
        `/v1/jobs/${id}/logs?since=${since}`,
      );
      for (const l of page.lines) out(json() ? JSON.stringify(l) : l.text);
      since = page.next;
      if (page.lines.length > 0) continue;
      if (!o.follow) return;
      const j = await c.json<{ status: string }>('GET', `/v1/jobs/${id}`);
      if (['succeeded', 'failed', 'cancelled'].includes(j.status)) {
        const last = await c.json<{ lines: { text: string }[] }>('GET', `/v1/jobs/${id}/logs?since=${since}`);
        for (const l of last.lines) out(l.text);
        return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  });

jobs.command('cancel <id>').action(async (id: string) => {
  const j = await client().json<{ id: string; status: string }>('POST', `/v1/jobs/${id}:cancel`);
  out(`${j.id} ${j.status}`);
});

const EXIT: Partial<Record<string, number>> = {
  invalid_request: 65,
  invalid_spec: 65,
  invalid_file: 65,
  not_found: 69,
  forbidden: 69,
  unauthorized: 69,
  conflict: 65,
  unavailable: 75,
  rate_limited: 75,
};

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 64);
  if (err instanceof LowrankError) {
    process.stderr.write(`lora: ${err.toText()}\n`);
    if (err.code === 'unauthorized') process.stderr.write('hint: `lora login --token lrk_...` (create a token in the registry)\n');
    process.exit(EXIT[err.code] ?? 1);
  }
  process.stderr.write(`lora: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
}
