/**
 * Waits (at most 60 s) until the registry answers /readyz and, when given, its bootstrap
 * token file exists, so what starts next can use both. Usage: wait-ready.ts <url> [token-file]
 */
import { existsSync } from 'node:fs';

const [base, tokenFile] = process.argv.slice(2);
if (!base) throw new Error('usage: wait-ready.ts <registry-url> [token-file]');
const deadline = Date.now() + 60_000;
const ready = () =>
  fetch(`${base}/readyz`).then(
    (r) => r.ok,
    () => false,
  );
while (!((await ready()) && (!tokenFile || existsSync(tokenFile)))) {
  if (Date.now() > deadline) {
    process.stderr.write(`the registry at ${base} did not become ready in 60 s; see its log above\n`);
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 200));
}
