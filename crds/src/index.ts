export type * from '../gen/types.ts';
export { asResource } from './envelope.ts';
export * from './errors.ts';
export { createLogger, type Logger } from './log.ts';
export {
  crdInfo,
  JOB_KINDS,
  type JobKind,
  parseResource,
  problemCount,
  type ValidationResult,
  validateResource,
  validateSpec,
} from './validate.ts';
