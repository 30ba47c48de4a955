/**
 * Form fields generated from a job kind's schema: objects as fieldsets (optional ones folded),
 * enums as selects or checkboxes, numbers, booleans, comma lists, and JSON for maps and lists
 * of objects. Field ids are the field paths, so the server's errors land on their field.
 */
import type { FieldError } from '../../api/client.ts';
import { type RawValues, type SchemaNode, widgetOf } from './schema.ts';

export const fieldId = (path: string) => `f-${path}`;

interface Props {
  node: SchemaNode;
  path: string;
  name: string;
  required: boolean;
  raw: RawValues;
  set: (path: string, value: string | string[]) => void;
  errors: FieldError[];
}

/** Errors for this exact field (array items and map keys count as the field). */
const errorsAt = (errors: FieldError[], path: string) =>
  errors.filter(
    (e) =>
      e.path === path || e.path.startsWith(`${path}[`) || (e.path.startsWith(`${path}.`) && !e.path.slice(path.length + 1).includes('.')),
  );

function FieldErrors({ id, errors }: { id: string; errors: FieldError[] }) {
  if (errors.length === 0) return null;
  return (
    <ul id={`${id}-error`} className="field-errors">
      {errors.map((e) => (
        <li key={`${e.path}:${e.message}`}>{e.message}</li>
      ))}
    </ul>
  );
}

export function SchemaField(props: Props) {
  const { node, path, name, required, raw, set, errors } = props;
  const id = fieldId(path);
  const w = widgetOf(node);
  const mine = w === 'object' ? errors.filter((e) => e.path === path) : errorsAt(errors, path);
  const described = [node.description ? `${id}-help` : '', mine.length > 0 ? `${id}-error` : ''].filter(Boolean).join(' ') || undefined;
  const label = (
    <>
      {name}
      {required && <span aria-hidden="true"> *</span>}
      {required && <span className="visually-hidden"> (required)</span>}
    </>
  );
  const help = node.description ? (
    <p id={`${id}-help`} className="help">
      {node.description}
      {node.default !== undefined && ` Default: ${JSON.stringify(node.default)}.`}
    </p>
  ) : null;

  if (w === 'object') {
    const inner = errors.some((e) => e.path === path || e.path.startsWith(`${path}.`));
    const body = (
      <fieldset id={id} className="obj" aria-describedby={described}>
        <legend>{label}</legend>
        {help}
        <FieldErrors id={id} errors={mine} />
        {node.properties.map(([k, child]) => (
          <SchemaField key={k} {...props} node={child} path={`${path}.${k}`} name={k} required={node.required.includes(k)} />
        ))}
      </fieldset>
    );
    if (required) return body;
    return (
      <details className="obj-fold" open={inner || undefined}>
        <summary>{name}</summary>
        {body}
      </details>
    );
  }
  if (w === 'multi') {
    const current = raw[path];
    const chosen = Array.isArray(current) ? current : [];
    return (
      <fieldset id={id} className="field multi" aria-describedby={described}>
        <legend>{label}</legend>
        {help}
        {(node.items?.enum ?? []).map((opt) => {
          const s = String(opt);
          return (
            <label key={s} className="inline">
              <input
                type="checkbox"
                checked={chosen.includes(s)}
                onChange={(e) => set(path, e.target.checked ? [...chosen, s] : chosen.filter((c) => c !== s))}
              />{' '}
              {s}
            </label>
          );
        })}
        <FieldErrors id={id} errors={mine} />
      </fieldset>
    );
  }
  const current = raw[path];
  const value = typeof current === 'string' ? current : '';
  const common = {
    id,
    name: path,
    value,
    'aria-describedby': described,
    'aria-invalid': mine.length > 0 ? true : undefined,
    'aria-required': required || undefined,
  };
  let control: React.ReactNode;
  if (w === 'select' || w === 'boolean') {
    const options = w === 'boolean' ? ['true', 'false'] : (node.enum ?? []).map(String);
    control = (
      <select {...common} onChange={(e) => set(path, e.target.value)}>
        <option value="">{node.default !== undefined ? `default (${String(node.default)})` : '—'}</option>
        {options.map((o) => (
          <option key={o}>{o}</option>
        ))}
      </select>
    );
  } else if (w === 'json') {
    control = <textarea {...common} rows={3} placeholder="JSON" spellCheck={false} onChange={(e) => set(path, e.target.value)} />;
  } else {
    control = (
      <input
        {...common}
        type="text"
        inputMode={w === 'number' ? 'decimal' : undefined}
        placeholder={w === 'list' ? 'comma-separated' : node.default !== undefined ? String(node.default) : undefined}
        onChange={(e) => set(path, e.target.value)}
      />
    );
  }
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {control}
      {help}
      <FieldErrors id={id} errors={mine} />
    </div>
  );
}
