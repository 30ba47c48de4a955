/** A version's direct parents: relation, parent (a link, or the outside reference), merge weight. */
import type { Version } from '../../api/client.ts';
import { href, Link } from '../../app/router.tsx';
import { num, parseVersionRef } from '../../shared/format.ts';
import { RelationBadge } from '../lineage/relations.tsx';

export function ParentsList({ v }: { v: Version }) {
  if (v.lineage.length === 0) return <p className="muted">No recorded parents.</p>;
  return (
    <ul className="parents">
      {v.lineage.map((e, i) => {
        const ref = e.parent ? parseVersionRef(e.parent) : null;
        return (
          // biome-ignore lint/suspicious/noArrayIndexKey: edges have no id and keep their order.
          <li key={i}>
            <RelationBadge relation={e.relation} />{' '}
            {ref ? <Link to={href(`/repos/${ref.namespace}/${ref.name}`, { v: ref.number })}>{e.parent}</Link> : <code>{e.parentRef}</code>}
            {typeof e.weight === 'number' && <span className="weight"> weight {num(e.weight)}</span>}
          </li>
        );
      })}
    </ul>
  );
}
