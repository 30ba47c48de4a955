/**
 * The batch/v1 Job (and the ConfigMap holding its spec file) for one custom resource.
 *
 * Contract with the worker (`node worker/src/cli.ts run --spec <file>`):
 * - the spec: the custom resource as accepted (apiVersion/kind/metadata/spec, defaults
 *   applied) in a ConfigMap mounted read-only at /etc/lowrank/spec/resource.json. A file,
 *   not an env var: specs reach tens of KiB and env shows up in `kubectl describe pod`.
 * - env: LOWRANK_REGISTRY_URL, LOWRANK_TOKEN (from a Secret), LOWRANK_RESULT_FILE; for
 *   Trans-LoRA AdapterJobs LOWRANK_SEED_KEY (from an optional Secret).
 * - the result: LOWRANK_RESULT_FILE is the container's terminationMessagePath, so the
 *   JSON result ({"status":"succeeded","output":{...}} or {"status":"failed","reason":...})
 *   comes back in the pod's container status without exec or log scraping.
 * - exit codes: 64 usage and 65 bad input fail the Job at once (podFailurePolicy FailJob:
 *   retrying cannot help); 75 retryable and 70 internal count against backoffLimit.
 */
import type { V1Affinity, V1ConfigMap, V1Job, V1OwnerReference, V1Toleration } from '@kubernetes/client-node';
import type { OperatorConfig } from './config.ts';
import { API_VERSION, GROUP, type Kind, LABELS, MANAGED_BY } from './kinds.ts';
import { registryJobId } from './progress.ts';

export const SPEC_DIR = '/etc/lowrank/spec';
export const SPEC_FILE = `${SPEC_DIR}/resource.json`;
export const RESULT_FILE = '/var/run/lowrank/result.json';
export const CONTAINER = 'worker';
/** The CR generation the Job was made from. */
export const GENERATION_ANNOTATION = `${GROUP}/generation`;
/** Exit codes after which a retry cannot help (usage, bad input). */
export const NO_RETRY_EXIT_CODES = [64, 65];

/** The fields every kind shares (see crds/bases: suspend, resources, scheduling, retry, output). */
export interface CommonSpec {
  suspend?: boolean;
  resources?: {
    gpu?: { count?: number; type?: string };
    cpu?: string | number;
    memory?: string | number;
    ephemeralStorage?: string | number;
  };
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
  affinity?: Record<string, unknown>;
  priorityClassName?: string;
  retry?: { backoffLimit?: number; activeDeadlineSeconds?: number; ttlSecondsAfterFinished?: number };
  output?: { repository?: string; tags?: string[] };
}

export interface Resource {
  apiVersion?: string;
  kind: Kind;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string | Date;
    finalizers?: string[];
    resourceVersion?: string;
  };
  spec: CommonSpec & Record<string, unknown>;
  status?: Record<string, unknown>;
}

export function ownerReference(cr: Resource): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: cr.kind,
    name: cr.metadata.name,
    uid: cr.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function labels(cr: Resource): Record<string, string> {
  return { [LABELS.managedBy]: MANAGED_BY, [LABELS.kind]: cr.kind, [LABELS.name]: cr.metadata.name.slice(0, 63) };
}

/** The spec file's content: the resource as the worker should see it (no status, no server fields). */
export function specFile(cr: Resource): string {
  const { name, namespace, uid, generation, labels: l, annotations } = cr.metadata;
  return JSON.stringify(
    { apiVersion: API_VERSION, kind: cr.kind, metadata: { name, namespace, uid, generation, labels: l, annotations }, spec: cr.spec },
    null,
    2,
  );
}

export function buildConfigMap(cr: Resource, name: string): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace: cr.metadata.namespace, labels: labels(cr), ownerReferences: [ownerReference(cr)] },
    data: { 'resource.json': specFile(cr) },
    immutable: true,
  };
}

const quantity = (v: string | number | undefined, fallback: string) => (v === undefined ? fallback : String(v));

export function buildJob(cr: Resource, name: string, cfg: OperatorConfig): V1Job {
  const s = cr.spec;
  const gpus = s.resources?.gpu?.count ?? 1;
  const resources: Record<string, string> = {
    cpu: quantity(s.resources?.cpu, cfg.defaultCpu),
    memory: quantity(s.resources?.memory, cfg.defaultMemory),
  };
  if (gpus > 0) resources['nvidia.com/gpu'] = String(gpus);
  if (s.resources?.ephemeralStorage !== undefined) resources['ephemeral-storage'] = String(s.resources.ephemeralStorage);
  // GPU pods go to the GPU pool (operator defaults), then the spec's own choices on top.
  const nodeSelector = { ...(gpus > 0 ? cfg.gpuNodeSelector : {}), ...s.nodeSelector };
  const tolerations = [...(gpus > 0 ? (cfg.gpuTolerations as V1Toleration[]) : []), ...(s.tolerations ?? [])];
  if (s.resources?.gpu?.type) nodeSelector[cfg.gpuProductLabel] = s.resources.gpu.type;
  const env = [
    ...Object.entries(cfg.workerEnv).map(([n, value]) => ({ name: n, value })),
    { name: 'LOWRANK_REGISTRY_URL', value: cfg.registryUrl },
    { name: 'LOWRANK_TOKEN', valueFrom: { secretKeyRef: { name: cfg.tokenSecretName, key: cfg.tokenSecretKey } } },
    { name: 'LOWRANK_RESULT_FILE', value: RESULT_FILE },
    { name: 'LOWRANK_RESOURCE', value: `${cr.kind}/${cr.metadata.namespace}/${cr.metadata.name}` },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
  ];
  // The registry job record the worker reports progress to (see progress.ts).
  const jobId = registryJobId(cr.metadata.annotations);
  if (jobId) env.push({ name: 'LOWRANK_JOB_ID', value: jobId });
  // Trans-LoRA seeds are encrypted under a key from a Secret; optional, so a missing one
  // reaches the worker, which fails the job (exit 65) naming LOWRANK_SEED_KEY.
  if (cr.kind === 'AdapterJob' && (s.mode === 'transfer' || (s.training as { transferable?: boolean } | undefined)?.transferable === true))
    env.push({
      name: 'LOWRANK_SEED_KEY',
      valueFrom: { secretKeyRef: { name: cfg.seedKeySecretName, key: cfg.seedKeySecretKey, optional: true } },
    } as (typeof env)[number]);
  const retry = s.retry ?? {};
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name,
      namespace: cr.metadata.namespace,
      labels: labels(cr),
      annotations: { [GENERATION_ANNOTATION]: String(cr.metadata.generation ?? 0) },
      ownerReferences: [ownerReference(cr)],
    },
    spec: {
      suspend: s.suspend === true,
      backoffLimit: retry.backoffLimit ?? 3,
      activeDeadlineSeconds: retry.activeDeadlineSeconds,
      ttlSecondsAfterFinished: retry.ttlSecondsAfterFinished,
      podFailurePolicy: {
        rules: [
          { action: 'FailJob', onExitCodes: { containerName: CONTAINER, operator: 'In', values: NO_RETRY_EXIT_CODES } },
          // Preemption or node drain is not the worker's fault: do not count it.
          { action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget', status: 'True' }] },
        ],
      },
      template: {
        metadata: { labels: labels(cr) },
        spec: {
          restartPolicy: 'Never', // required by podFailurePolicy; retries are new pods
          serviceAccountName: cfg.workerServiceAccount || undefined,
          automountServiceAccountToken: false, // the worker talks to the registry, not the apiserver
          nodeSelector: Object.keys(nodeSelector).length > 0 ? nodeSelector : undefined,
          tolerations: tolerations.length > 0 ? tolerations : undefined,
          affinity: s.affinity as V1Affinity | undefined, // passed through unchanged (the CRD keeps unknown fields)
          priorityClassName: s.priorityClassName,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 10001,
            runAsGroup: 10001,
            fsGroup: 10001,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [
            {
              name: CONTAINER,
              image: cfg.workerImage,
              command: cfg.workerCommand,
              args: ['--spec', SPEC_FILE],
              workingDir: cfg.workerWorkdir,
              env,
              resources: { requests: resources, limits: resources },
              terminationMessagePath: RESULT_FILE,
              terminationMessagePolicy: 'FallbackToLogsOnError',
              volumeMounts: [
                { name: 'spec', mountPath: SPEC_DIR, readOnly: true },
                { name: 'scratch', mountPath: '/tmp' },
              ],
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
            },
          ],
          volumes: [
            { name: 'spec', configMap: { name } },
            { name: 'scratch', emptyDir: s.resources?.ephemeralStorage ? { sizeLimit: String(s.resources.ephemeralStorage) } : {} },
          ],
        },
      },
    },
  };
}
