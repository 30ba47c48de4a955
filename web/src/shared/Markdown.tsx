/**
 * Markdown from a version (its README model card) rendered as HTML, sanitised by DOMPurify
 * so a card cannot run script or inject handlers; links open outside the app.
 */
import DOMPurify from 'dompurify';
import { marked } from 'marked';
import { useMemo } from 'react';

/** The YAML front matter of a model card (shown as metadata) and the body. */
export function splitFrontMatter(text: string): { frontMatter: string | null; body: string } {
  const m = /^---\r?\n([\s\S]*?)\r?\n---\r?\n?/.exec(text);
  return m ? { frontMatter: m[1] ?? '', body: text.slice(m[0].length) } : { frontMatter: null, body: text };
}

export function renderMarkdown(text: string): string {
  const html = marked.parse(text, { async: false, gfm: true });
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ['style', 'form', 'input'], FORBID_ATTR: ['style'] });
}

export function Markdown({ text }: { text: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  // biome-ignore lint/security/noDangerouslySetInnerHtml: sanitised by DOMPurify above.
  return <div className="markdown" dangerouslySetInnerHTML={{ __html: html }} />;
}
