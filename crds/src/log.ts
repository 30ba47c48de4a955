/**
 * The structured JSON logger every process uses (pino): one line per event, with
 * `service` and, where known, `job`/`reconcileId` bound through `child()`.
 * LOWRANK_LOG_LEVEL picks the level (default info).
 */
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(service: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: process.env.LOWRANK_LOG_LEVEL ?? 'info',
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: pino.stdSerializers.err },
  };
  return destination ? pino(options, destination) : pino(options);
}
