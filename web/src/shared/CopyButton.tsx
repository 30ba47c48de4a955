/** Copies text to the clipboard and says so (to screen readers too). */
import { useState } from 'react';

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState<'idle' | 'copied' | 'failed'>('idle');
  const copy = () =>
    navigator.clipboard.writeText(text).then(
      () => setDone('copied'),
      () => setDone('failed'),
    );
  return (
    <button type="button" className="copy" onClick={copy} aria-label={`Copy ${label}`}>
      {done === 'copied' ? 'Copied' : done === 'failed' ? 'Copy failed: select the text' : 'Copy'}
      <span className="visually-hidden" aria-live="polite">
        {done === 'copied' ? `${label} copied` : ''}
      </span>
    </button>
  );
}
