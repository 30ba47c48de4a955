/** The three custom resource kinds the operator reconciles, and names derived from them. */
import { createHash } from 'node:crypto';

export const GROUP = 'lora.lowrank.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const FINALIZER = `${GROUP}/cleanup`;
export const MANAGED_BY = 'lowrank-operator';

export const KINDS = {
  AdapterJob: { plural: 'adapterjobs', short: 'aj' },
  AdapterMerge: { plural: 'adaptermerges', short: 'am' },
  CompressionJob: { plural: 'compressionjobs', short: 'cj' }, // Job name prefix; the CRD short name is cpj (cj is CronJob's)
} as const;
export type Kind = keyof typeof KINDS;
export const KIND_NAMES = Object.keys(KINDS) as Kind[];

export const LABELS = {
  managedBy: 'app.kubernetes.io/managed-by',
  kind: `${GROUP}/kind`,
  name: `${GROUP}/name`,
} as const;

/**
 * The Job's name: deterministic (a restarted operator finds the Job it created instead of
 * making a second one) and a valid label value (<= 63 characters, the Job controller puts
 * it in a label), with a hash of the full name when it has to be cut.
 */
export function jobName(kind: Kind, name: string): string {
  const full = `${KINDS[kind].short}-${name}`;
  if (full.length <= 63) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  return `${full.slice(0, 54).replace(/[-.]+$/, '')}-${hash}`;
}

export const key = (kind: Kind, namespace: string, name: string) => `${kind}/${namespace}/${name}`;

export function parseKey(k: string): { kind: Kind; namespace: string; name: string } {
  const [kind, namespace, name] = k.split('/') as [Kind, string, string];
  return { kind, namespace, name };
}
