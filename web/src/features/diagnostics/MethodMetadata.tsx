/**
 * What the method recorded about how a version was made (transfer: discriminator accuracy,
 * teacher/student scores; generation: task description, seed, memorisation distance; merges:
 * inputs and density; …): scores as bars, the task description as a quote, the rest as facts
 * (one level of nested objects flattened into "outer inner" facts).
 */
import type { Version } from '../../api/client.ts';
import { num } from '../../shared/format.ts';

const SCORE = /(score|accuracy|rate|agreement|similarity|cosine)$/i;
const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const words = (key: string) => key.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/_/g, ' ');

export function MethodMetadata({ v }: { v: Version }) {
  const meta = isRecord(v.methodMetadata) ? v.methodMetadata : {};
  // One level of nesting (a generation's memorisation check, a transfer's counts) reads as
  // "memorisation cosine": facts and scores like the rest, not a JSON blob.
  const entries = Object.entries(meta)
    .filter(([k]) => k !== 'lossCurve' && k !== 'loss_curve')
    .flatMap(([k, x]): [string, unknown][] =>
      isRecord(x) && Object.values(x).every((y) => !isRecord(y) && !Array.isArray(y))
        ? Object.entries(x).map(([k2, y]) => [`${k} ${k2}`, y])
        : [[k, x]],
    );
  if (entries.length === 0) return <p className="muted">The method recorded no metadata for this version.</p>;
  const scores = entries.filter((e): e is [string, number] => typeof e[1] === 'number' && SCORE.test(e[0]) && e[1] >= 0 && e[1] <= 1);
  const task = entries.find(([k, x]) => /task ?description/i.test(words(k)) && typeof x === 'string');
  const rest = entries.filter(([k]) => !scores.some(([s]) => s === k) && k !== task?.[0]);
  return (
    <div className="method-meta">
      {task && (
        <blockquote>
          <p>{String(task[1])}</p>
          <footer>task description</footer>
        </blockquote>
      )}
      {scores.length > 0 && (
        <table className="scores">
          <caption>Scores (0 to 1)</caption>
          <tbody>
            {scores.map(([k, x]) => (
              <tr key={k}>
                <th scope="row">{words(k)}</th>
                <td>
                  <span className="bar" aria-hidden="true">
                    <span style={{ width: `${100 * x}%` }} />
                  </span>
                  {num(x, 3)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {rest.length > 0 && (
        <dl className="facts">
          {rest.map(([k, x]) => (
            <div key={k}>
              <dt>{words(k)}</dt>
              <dd>
                {typeof x === 'number' ? (
                  num(x)
                ) : typeof x === 'string' || typeof x === 'boolean' ? (
                  String(x)
                ) : (
                  <code>{JSON.stringify(x)}</code>
                )}
              </dd>
            </div>
          ))}
        </dl>
      )}
    </div>
  );
}
