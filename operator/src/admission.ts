/**
 * The operator's first step on every reconcile: validate the resource with the shared
 * validator (the same one behind the REST API and `lora-worker`), including transition
 * rules against the last spec the operator accepted. A spec that retrying cannot fix
 * becomes an `Accepted=False` condition with reason `InvalidSpec`, never a crash loop.
 */
import { type JobResource, validateResource } from '@lowrank/crds';
import type { FieldError } from '@lowrank/crds/errors';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
}

export type Admission =
  | { accepted: true; resource: JobResource; condition: Condition }
  | { accepted: false; errors: FieldError[]; condition: Condition };

const MAX_MESSAGE = 1024; // keep conditions readable in `kubectl describe`

export function admit(obj: unknown, lastAccepted?: unknown): Admission {
  const generation = (obj as { metadata?: { generation?: number } } | null)?.metadata?.generation;
  const result = validateResource(obj, lastAccepted === undefined ? {} : { old: lastAccepted });
  if (result.ok) {
    return {
      accepted: true,
      resource: result.value,
      condition: {
        type: 'Accepted',
        status: 'True',
        reason: 'SpecValid',
        message: 'spec is valid',
        ...(generation === undefined ? {} : { observedGeneration: generation }),
      },
    };
  }
  let message = result.errors.map((e) => `${e.path}: ${e.message}`).join('; ');
  if (message.length > MAX_MESSAGE) message = `${message.slice(0, MAX_MESSAGE - 1)}…`;
  return {
    accepted: false,
    errors: result.errors,
    condition: {
      type: 'Accepted',
      status: 'False',
      reason: 'InvalidSpec',
      message,
      ...(generation === undefined ? {} : { observedGeneration: generation }),
    },
  };
}
