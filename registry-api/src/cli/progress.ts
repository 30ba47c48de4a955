/**
 * Byte progress for long transfers: a bar on a terminal (cli-progress), one JSON line per
 * finished file otherwise (CI logs, pods), so progress is visible either way.
 */
import { SingleBar } from 'cli-progress';

export interface Progress {
  add(bytes: number): void;
  fileDone(path: string, info: Record<string, unknown>): void;
  stop(): void;
}

export function progress(label: string, totalBytes: number): Progress {
  if (process.stderr.isTTY) {
    const bar = new SingleBar({
      format: `${label} [{bar}] {percentage}% | {value_h}/{total_h} | {speed} | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? human(v) : String(v)),
    });
    const started = Date.now();
    let done = 0;
    bar.start(totalBytes, 0, { value_h: human(0), total_h: human(totalBytes), speed: '' });
    return {
      add(bytes) {
        done += bytes;
        const rate = done / Math.max((Date.now() - started) / 1000, 1e-3);
        bar.update(done, { value_h: human(done), total_h: human(totalBytes), speed: `${human(rate)}/s` });
      },
      fileDone() {},
      stop: () => bar.stop(),
    };
  }
  return {
    add() {},
    fileDone(path, info) {
      process.stderr.write(`${JSON.stringify({ msg: label, path, ...info })}\n`);
    },
    stop() {},
  };
}

export function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
