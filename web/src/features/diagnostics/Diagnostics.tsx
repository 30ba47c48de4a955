/**
 * Diagnostics of one version, or of several overlaid (compare): per-module singular-value
 * spectra, effective rank per module, and the training/eval loss curves, from what the
 * registry's post-processing computed (GET .../diagnostics) or the version's metrics hold;
 * "not computed yet" when neither has them.
 */
import { useEffect, useId, useState } from 'react';
import { api, type Version } from '../../api/client.ts';
import { num } from '../../shared/format.ts';
import { TableScroll } from '../../shared/TableScroll.tsx';
import { LineChart, type Series } from './LineChart.tsx';
import { type ModuleSpectrum, readLossCurve, readSpectra } from './read-metrics.ts';

export const VERSION_COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7'];
const MODULE_COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#8a6d00', '#56B4E9', '#555555', '#E69F00'];

const keyOf = (v: Version) => `${v.repository}@${v.number}`;

/** The registry's computed diagnostics of each version, as they arrive (absent: pending or not readable). */
function useComputed(versions: Version[]): Record<string, unknown> {
  const key = versions.map(keyOf).join(',');
  const [found, setFound] = useState<Record<string, unknown>>({});
  // biome-ignore lint/correctness/useExhaustiveDependencies: `key` names the versions.
  useEffect(() => {
    const abort = new AbortController();
    for (const v of versions) {
      const [namespace = '', name = ''] = v.repository.split('/');
      api
        .GET('/v1/repos/{namespace}/{name}/versions/{ref}/diagnostics', {
          params: { path: { namespace, name, ref: String(v.number) } },
          signal: abort.signal,
        })
        .then(
          (r) => {
            if (r.data && r.data.state === 'ready') setFound((f) => ({ ...f, [keyOf(v)]: r.data }));
          },
          () => {},
        );
    }
    return () => abort.abort();
  }, [key]);
  return found;
}

export function Diagnostics({ versions }: { versions: { label: string; v: Version }[] }) {
  const computed = useComputed(versions.map((x) => x.v));
  const spectra = versions.map((x) => {
    const own = readSpectra(x.v.metrics);
    return { label: x.label, modules: own.length > 0 ? own : readSpectra({ diagnostics: computed[keyOf(x.v)] }) };
  });
  const losses = versions.map((x) => ({ label: x.label, points: readLossCurve(x.v.metrics, x.v.methodMetadata) }));
  const hasSpectra = spectra.some((s) => s.modules.length > 0);
  const hasLoss = losses.some((l) => l.points.length > 0);
  return (
    <div className="diagnostics">
      {hasSpectra ? (
        <Spectra spectra={spectra} />
      ) : (
        <NotComputed what="Singular-value spectra and effective rank" why="the registry computes them after a push (post-processing)" />
      )}
      {hasLoss ? (
        <LineChart
          title="Loss curve"
          xLabel="step"
          yLabel="loss"
          description={losses
            .filter((l) => l.points.length > 0)
            .map((l) => `${l.label}: ${l.points.length} points, last loss ${num(l.points.at(-1)?.loss ?? Number.NaN)}`)
            .join('; ')}
          series={losses.flatMap((l, i) => {
            const color = VERSION_COLORS[i % VERSION_COLORS.length] ?? '#000';
            const prefix = versions.length > 1 ? `${l.label} ` : '';
            const pts = (key: 'loss' | 'evalLoss') =>
              l.points.flatMap((p): [number, number][] => (p[key] === null ? [] : [[p.step, p[key] ?? 0]]));
            const out: Series[] = [];
            if (pts('loss').length > 0) out.push({ name: `${prefix}training loss`, color, points: pts('loss') });
            if (pts('evalLoss').length > 0) out.push({ name: `${prefix}eval loss`, color, points: pts('evalLoss'), dashed: true });
            return out;
          })}
        />
      ) : (
        <NotComputed what="Loss curve" why="only training jobs record one, as they run" />
      )}
    </div>
  );
}

function NotComputed({ what, why }: { what: string; why: string }) {
  return (
    <div className="state state-empty not-computed" role="status">
      <strong>{what}: not computed yet.</strong> <span className="muted">This version has none stored; {why}.</span>
    </div>
  );
}

function Spectra({ spectra }: { spectra: { label: string; modules: ModuleSpectrum[] }[] }) {
  const modules = [...new Set(spectra.flatMap((s) => s.modules.map((m) => m.module)))].sort((a, b) =>
    a.localeCompare(b, undefined, { numeric: true }),
  );
  const single = spectra.length === 1;
  const [focus, setFocus] = useState<string>(single ? 'all' : (modules[0] ?? ''));
  const selectId = useId();
  const chosen = focus === 'all' ? modules : modules.filter((m) => m === focus);
  const series: Series[] = single
    ? chosen.map((m, i) => ({
        name: m,
        color: MODULE_COLORS[i % MODULE_COLORS.length] ?? '#000',
        points: (spectra[0]?.modules.find((x) => x.module === m)?.sigma ?? []).map((s, k): [number, number] => [k + 1, s]),
      }))
    : spectra.map((s, i) => ({
        name: s.label,
        color: VERSION_COLORS[i % VERSION_COLORS.length] ?? '#000',
        dashed: i > 0,
        points: (s.modules.find((x) => x.module === focus)?.sigma ?? []).map((v, k): [number, number] => [k + 1, v]),
      }));
  return (
    <div className="spectra">
      <label htmlFor={selectId}>Module </label>
      <select id={selectId} value={focus} onChange={(e) => setFocus(e.target.value)}>
        {single && <option value="all">all {modules.length} modules</option>}
        {modules.map((m) => (
          <option key={m} value={m}>
            {m}
          </option>
        ))}
      </select>
      <LineChart
        title={`Singular values of ΔW${focus === 'all' ? ' per module' : ` for ${focus}`}`}
        xLabel="index i"
        yLabel="σᵢ"
        logY
        description={series.map((s) => `${s.name}: ${s.points.length} values, largest ${num(s.points[0]?.[1] ?? Number.NaN)}`).join('; ')}
        series={series.filter((s) => s.points.length > 0)}
      />
      <EffectiveRank spectra={spectra} modules={modules} />
    </div>
  );
}

/** Effective rank per module as a table with inline bars, one column group per version. */
function EffectiveRank({ spectra, modules }: { spectra: { label: string; modules: ModuleSpectrum[] }[]; modules: string[] }) {
  const max = Math.max(1, ...spectra.flatMap((s) => s.modules.map((m) => m.sigma.length)));
  return (
    <TableScroll label="Effective rank per module">
      <table className="erank">
        <caption>Effective rank per module (entropy effective rank; bar length out of the largest rank {max})</caption>
        <thead>
          <tr>
            <th scope="col">Module</th>
            {spectra.map((s) => (
              <th key={s.label} scope="col">
                {spectra.length > 1 ? `${s.label} ` : ''}erank / r · k@90%
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {modules.map((m) => (
            <tr key={m}>
              <th scope="row">
                <code>{m}</code>
              </th>
              {spectra.map((s, i) => {
                const x = s.modules.find((y) => y.module === m);
                if (!x) return <td key={s.label}>—</td>;
                const erank = x.erank ?? Number.NaN;
                return (
                  <td key={s.label}>
                    <span className="bar" aria-hidden="true">
                      <span
                        style={{ width: `${(100 * (Number.isFinite(erank) ? erank : 0)) / max}%`, background: VERSION_COLORS[i % 4] }}
                      />
                    </span>
                    {num(erank, 3)} / {x.sigma.length}
                    {x.k90 !== null ? ` · ${x.k90}` : ''}
                  </td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </TableScroll>
  );
}
