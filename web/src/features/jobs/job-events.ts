/**
 * A job's Server-Sent Events (GET /v1/jobs/{id}/events), read with fetch so the request can
 * carry the token (EventSource cannot send headers). Calls `onJob` with each `job` event
 * until the stream ends (the job finished) or `signal` aborts.
 */
import { authHeaders, type JobRecord } from '../../api/client.ts';

export async function followJob(id: string, onJob: (job: JobRecord) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, {
    headers: { ...authHeaders(), Accept: 'text/event-stream' },
    signal,
  });
  if (!res.ok || !res.body) throw new Error(`events for job ${id}: HTTP ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (event === 'job' && data.length > 0) onJob(JSON.parse(data.join('\n')));
    }
  }
}
