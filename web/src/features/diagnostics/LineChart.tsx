/**
 * A small SVG line chart: several series, linear or log y, axis ticks, a legend, and a
 * text description for screen readers. No charting library: the catalog's plots are few and simple.
 */
export interface Series {
  name: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

const W = 640;
const H = 280;
const M = { top: 12, right: 16, bottom: 40, left: 60 };

function ticks(lo: number, hi: number, count: number): number[] {
  if (hi <= lo) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / count));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) ?? step * 10;
  const out: number[] = [];
  for (let t = Math.ceil(lo / nice) * nice; t <= hi + nice * 1e-9; t += nice) out.push(Number(t.toPrecision(12)));
  return out;
}

const fmt = (x: number) => (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-2 && x !== 0) ? x.toExponential(0) : String(Number(x.toPrecision(3))));

export function LineChart(props: { title: string; series: Series[]; xLabel: string; yLabel: string; logY?: boolean; description: string }) {
  const { series, logY } = props;
  const all = series.flatMap((s) => s.points).filter(([, y]) => !logY || y > 0);
  if (all.length === 0) return null;
  const ty = (y: number) => (logY ? Math.log10(y) : y);
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => ty(y));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const sx = (x: number) => M.left + ((x - x0) / (x1 - x0 || 1)) * (W - M.left - M.right);
  const sy = (y: number) => H - M.bottom - ((ty(y) - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const yTicks = logY
    ? ticks(Math.floor(y0), Math.ceil(y1), 6)
        .filter((t) => Number.isInteger(t) && t >= y0 && t <= y1)
        .map((t) => 10 ** t)
    : ticks(y0, y1, 5);
  const xTicks = ticks(x0, x1, 6).filter((t) => t >= x0 && t <= x1);
  return (
    <figure className="chart">
      <figcaption>{props.title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${props.title}. ${props.description}`} preserveAspectRatio="xMidYMid meet">
        {yTicks.map((t) => (
          <g key={`y${t}`}>
            <line x1={M.left} x2={W - M.right} y1={sy(t)} y2={sy(t)} className="grid" />
            <text x={M.left - 6} y={sy(t) + 4} textAnchor="end" className="tick">
              {fmt(t)}
            </text>
          </g>
        ))}
        {xTicks.map((t) => (
          <text key={`x${t}`} x={sx(t)} y={H - M.bottom + 16} textAnchor="middle" className="tick">
            {fmt(t)}
          </text>
        ))}
        <line x1={M.left} x2={W - M.right} y1={H - M.bottom} y2={H - M.bottom} className="axis" />
        <line x1={M.left} x2={M.left} y1={M.top} y2={H - M.bottom} className="axis" />
        <text x={(M.left + W - M.right) / 2} y={H - 6} textAnchor="middle" className="label">
          {props.xLabel}
        </text>
        <text
          x={14}
          y={(M.top + H - M.bottom) / 2}
          textAnchor="middle"
          className="label"
          transform={`rotate(-90 14 ${(M.top + H - M.bottom) / 2})`}
        >
          {props.yLabel}
          {logY ? ' (log)' : ''}
        </text>
        {series.map((s) => {
          const pts = s.points.filter(([, y]) => !logY || y > 0);
          return (
            <g key={s.name}>
              <polyline
                points={pts.map(([x, y]) => `${sx(x)},${sy(y)}`).join(' ')}
                fill="none"
                stroke={s.color}
                strokeWidth={2}
                strokeDasharray={s.dashed ? '6 4' : undefined}
              />
              {pts.length <= 64 && pts.map(([x, y]) => <circle key={`${x},${y}`} cx={sx(x)} cy={sy(y)} r={2.5} fill={s.color} />)}
            </g>
          );
        })}
      </svg>
      {series.length > 1 && (
        <ul className="legend">
          {series.map((s) => (
            <li key={s.name}>
              <span className={`swatch${s.dashed ? ' dashed' : ''}`} style={{ background: s.color }} aria-hidden="true" />
              {s.name}
            </li>
          ))}
        </ul>
      )}
    </figure>
  );
}
