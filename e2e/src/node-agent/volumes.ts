/**
 * The agent has no container runtime, so no mount namespace: each volume becomes a
 * directory under the pod's own dir, and every path under a container's mountPath (in
 * command, args, env values, workingDir, terminationMessagePath) is rewritten to it.
 * ConfigMap and Secret volumes are written out as files; emptyDir is an empty dir.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Container, V1Pod } from '@kubernetes/client-node';

export interface Sources {
  configMap(namespace: string, name: string): Promise<Record<string, string> | undefined>;
  secret(namespace: string, name: string): Promise<Record<string, string> | undefined>;
}

/** volume name -> local directory */
export async function materializeVolumes(pod: V1Pod, podDir: string, sources: Sources): Promise<Map<string, string>> {
  const ns = pod.metadata?.namespace ?? 'default';
  const dirs = new Map<string, string>();
  for (const v of pod.spec?.volumes ?? []) {
    const dir = join(podDir, 'volumes', v.name);
    mkdirSync(dir, { recursive: true });
    dirs.set(v.name, dir);
    let data: Record<string, string> | undefined;
    let items: { key: string; path: string }[] | undefined;
    if (v.configMap) {
      data = await sources.configMap(ns, v.configMap.name ?? '');
      if (!data && !v.configMap.optional) throw new Error(`configMap "${v.configMap.name}" not found`);
      items = v.configMap.items;
    } else if (v.secret) {
      data = await sources.secret(ns, v.secret.secretName ?? '');
      if (!data && !v.secret.optional) throw new Error(`secret "${v.secret.secretName}" not found`);
      items = v.secret.items;
    }
    if (!data) continue; // emptyDir, projected service-account tokens and the rest: an empty dir
    const wanted = items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const { key, path } of wanted) {
      const value = data[key];
      if (value === undefined) throw new Error(`key "${key}" missing from volume "${v.name}"`);
      const file = join(dir, path);
      mkdirSync(join(file, '..'), { recursive: true });
      writeFileSync(file, value, { mode: 0o600 });
    }
  }
  return dirs;
}

/** Rewrites container paths to local ones, longest mountPath first. */
export function pathMapper(container: V1Container, volumes: Map<string, string>, terminationFile: string): (value: string) => string {
  const mounts = (container.volumeMounts ?? [])
    .filter((m) => volumes.has(m.name))
    .map((m) => ({ from: m.mountPath.replace(/\/+$/, ''), to: join(volumes.get(m.name) ?? '', m.subPath ?? '') }))
    // The kubelet bind-mounts a per-container file at terminationMessagePath.
    .concat([{ from: container.terminationMessagePath ?? '/dev/termination-log', to: terminationFile }])
    .sort((a, b) => b.from.length - a.from.length);
  if (mounts.length === 0) return (value) => value;
  const escaped = mounts.map((m) => m.from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  // One pass, longest path first, bounded by non-path characters (shell snippets carry
  // paths too); one pass so a replacement is never itself rewritten again.
  const re = new RegExp(`(?<![A-Za-z0-9._/-])(${escaped.join('|')})(?=/|[^A-Za-z0-9._-]|$)`, 'g');
  const to = new Map(mounts.map((m) => [m.from, m.to]));
  return (value) => value.replace(re, (found) => to.get(found) ?? found);
}
