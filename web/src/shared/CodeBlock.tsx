/** Preformatted text, labelled, wrapping long lines (so no scroll box that keyboard users could not scroll). */
export function CodeBlock({ label, children, language }: { label: string; children: string; language?: string }) {
  return (
    <section className="code-block" aria-label={label}>
      <pre className="code" data-language={language}>
        {children}
      </pre>
    </section>
  );
}
