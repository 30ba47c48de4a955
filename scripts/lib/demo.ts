/**
 * The one-command run's example: waits for the registry, then submits an example job
 * through the REST front door and prints what the platform made of it.
 * Usage: node scripts/lib/demo.ts <registry-url> <job.yaml>
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

const [base, file] = process.argv.slice(2);
if (!base || !file) throw new Error('usage: demo.ts <registry-url> <job.yaml>');

const deadline = Date.now() + 30_000;
for (;;) {
  const ok = await fetch(`${base}/readyz`).then(
    (r) => r.ok,
    () => false,
  );
  if (ok) break;
  if (Date.now() > deadline) {
    console.error(`the registry at ${base} did not become ready in 30 s; see its log above`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 200));
}

const job = parse(readFileSync(file, 'utf8'));
const res = await fetch(`${base}/v1/jobs:validate`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(job),
});
const body = (await res.json()) as { resource?: { kind: string; spec: Record<string, unknown> }; detail?: string };
if (!res.ok || !body.resource) {
  console.error(`example job ${file} was rejected: ${JSON.stringify(body, null, 2)}`);
  process.exit(1);
}
const { kind, spec } = body.resource;
console.error(`example ${kind} from ${file} accepted by ${base}/v1/jobs:validate; with defaults applied:`);
console.error(JSON.stringify(spec, null, 2));
