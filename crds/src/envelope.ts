/**
 * Accepts a job the way each front door receives it and returns a full custom resource:
 * the CR itself (kubectl, `lora-worker run --spec cr.yaml`), or the short REST form
 * `{kind, spec, metadata?}`, to which apiVersion (and a generated name) are added.
 */
import { crds } from '../gen/schemas.ts';

export function asResource(input: unknown, options: { generateName?: string } = {}): unknown {
  if (!input || typeof input !== 'object' || Array.isArray(input)) return input;
  const obj = input as Record<string, unknown>;
  const info = typeof obj.kind === 'string' ? crds[obj.kind as keyof typeof crds] : undefined;
  if (!info) return input;
  const out: Record<string, unknown> = { ...obj };
  if (out.apiVersion === undefined) out.apiVersion = `${info.group}/${info.version}`;
  if (out.metadata === undefined && options.generateName) out.metadata = { generateName: options.generateName };
  return out;
}
