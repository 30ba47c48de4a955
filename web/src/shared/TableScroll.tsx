/** A wide table's horizontal scroll box, reachable by keyboard so it can be scrolled without a mouse. */
import type { ReactNode } from 'react';

export function TableScroll({ label, children }: { label: string; children: ReactNode }) {
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be focusable to scroll it by keyboard (WCAG 2.1.1).
    <section className="table-wrap" aria-label={label} tabIndex={0}>
      {children}
    </section>
  );
}
