/** Reads a job spec file (YAML or JSON; the CR itself or `{kind, spec}`) and validates it. */
import { readFileSync } from 'node:fs';
import { asResource, type JobResource, parseResource } from '@lowrank/crds';
import { LowrankError } from '@lowrank/crds/errors';
import { parseAllDocuments } from 'yaml';

const MAX_SPEC_BYTES = 1 << 20;

export function readSpecFile(path: string): JobResource {
  let text: string;
  try {
    const buf = readFileSync(path);
    if (buf.length > MAX_SPEC_BYTES) throw new LowrankError('invalid_file', `${path}: spec files are limited to 1 MiB`);
    text = buf.toString('utf8');
  } catch (err) {
    if (err instanceof LowrankError) throw err;
    throw new LowrankError('invalid_file', `cannot read spec file ${path}: ${(err as Error).message}`);
  }
  const docs = parseAllDocuments(text, { prettyErrors: true });
  if (!Array.isArray(docs) || docs.length !== 1) {
    const n = Array.isArray(docs) ? docs.length : 0;
    throw new LowrankError('invalid_file', `${path}: expected exactly one YAML/JSON document, found ${n}`);
  }
  const doc = docs[0];
  if (!doc) throw new LowrankError('invalid_file', `${path}: empty file`);
  if (doc.errors.length > 0) {
    const first = doc.errors[0];
    throw new LowrankError('invalid_file', `${path}: not valid YAML/JSON: ${first?.message ?? 'parse error'}`);
  }
  return parseResource(asResource(doc.toJS({ maxAliasCount: 100 }), { generateName: 'job-' }));
}
