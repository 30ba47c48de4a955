#!/usr/bin/env node
/**
 * Runs the test node agent (the one fake of the test cluster; see agent.ts):
 *   node e2e/src/node-agent/main.ts --dir <pods dir> [--node lowrank-test-node]
 *        [--cpu 16] [--memory 128Gi] [--gpus 4] [--label key=value ...]
 * Reads $KUBECONFIG. Stops its child processes on SIGTERM/SIGINT.
 */
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { NodeAgent } from './agent.ts';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    node: { type: 'string', default: 'lowrank-test-node' },
    cpu: { type: 'string', default: '16' },
    memory: { type: 'string', default: '128Gi' },
    gpus: { type: 'string', default: '4' },
    label: { type: 'string', multiple: true, default: [] },
  },
  strict: true,
});
if (!values.dir) {
  console.error('usage: node-agent --dir <pods dir> [--node name] [--cpu n] [--memory q] [--gpus n] [--label k=v]');
  process.exit(64);
}
const gpus = Number(values.gpus);
if (!Number.isInteger(gpus) || gpus < 0) {
  console.error(`--gpus must be a whole number >= 0, got "${values.gpus}"`);
  process.exit(64);
}
const labels: Record<string, string> = {};
for (const l of values.label) {
  const at = l.indexOf('=');
  if (at <= 0) {
    console.error(`--label must be key=value, got "${l}"`);
    process.exit(64);
  }
  labels[l.slice(0, at)] = l.slice(at + 1);
}

const kc = new KubeConfig();
kc.loadFromDefault();
const agent = new NodeAgent(kc, { nodeName: values.node, dir: values.dir, cpu: values.cpu, memory: values.memory, gpus, labels });
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    void agent.stop().then(() => process.exit(0));
  });
}
await agent.start();
