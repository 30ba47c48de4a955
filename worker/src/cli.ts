#!/usr/bin/env node
/**
 * lora-worker: runs one job from its spec. Commands so far:
 *   lora-worker validate --spec <file> [--output yaml|json]
 *       checks the spec with the platform's one validator and prints it with defaults applied.
 */
import { parseArgs } from 'node:util';
import { asLowrankError, LowrankError } from '@lowrank/crds/errors';
import { stringify } from 'yaml';
import { EXIT } from './exit-codes.ts';
import { readSpecFile } from './spec-file.ts';

const USAGE = `usage: lora-worker validate --spec <file> [--output yaml|json]

  validate   check a job spec (YAML or JSON: an AdapterJob, AdapterMerge or
             CompressionJob resource, or {kind, spec}) and print it with defaults

exit status: 0 ok, 64 usage error, 65 invalid spec or input (do not retry),
             75 transient failure (retry), 70 internal error`;

function fail(code: number, message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

function main(argv: string[]): void {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    process.exit(command === undefined ? EXIT.usage : EXIT.ok);
  }
  if (command !== 'validate') fail(EXIT.usage, `lora-worker: unknown command "${command}"\n\n${USAGE}`);
  let values: { spec?: string; output?: string };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { spec: { type: 'string' }, output: { type: 'string', default: 'yaml' } },
      strict: true,
    }));
  } catch (err) {
    fail(EXIT.usage, `lora-worker validate: ${(err as Error).message}\n\n${USAGE}`);
  }
  if (!values.spec) fail(EXIT.usage, `lora-worker validate: --spec <file> is required\n\n${USAGE}`);
  if (values.output !== 'yaml' && values.output !== 'json')
    fail(EXIT.usage, `lora-worker validate: --output must be yaml or json, got "${values.output}"`);
  try {
    const resource = readSpecFile(values.spec);
    process.stdout.write(values.output === 'json' ? `${JSON.stringify(resource, null, 2)}\n` : stringify(resource));
    process.stderr.write(`${values.spec}: valid ${resource.kind}\n`);
  } catch (err) {
    const e = asLowrankError(err);
    const badInput = e instanceof LowrankError && ['invalid_spec', 'invalid_file', 'invalid_request'].includes(e.code);
    fail(badInput ? EXIT.badInput : EXIT.internal, `${values.spec}: ${e.toText()}`);
  }
}

main(process.argv.slice(2));
