/** The pull snippets, each in a copyable block. */
import type { Repository, Version } from '../../api/client.ts';
import { CodeBlock } from '../../shared/CodeBlock.tsx';
import { CopyButton } from '../../shared/CopyButton.tsx';
import { pullSnippets } from './snippets.ts';

export function PullSnippets({ repo, v }: { repo: Repository; v: Version }) {
  const snippets = pullSnippets({
    origin: window.location.origin,
    repo: `${repo.namespace}/${repo.name}`,
    number: v.number,
    baseModel: repo.baseModel,
    rank: v.rank ?? null,
  });
  return (
    <div className="snippets">
      {snippets.map((s) => (
        <figure key={s.id} className="snippet">
          <figcaption>
            <span>{s.title}</span>
            <CopyButton text={s.code} label={`${s.title} snippet`} />
          </figcaption>
          <CodeBlock label={`${s.title} snippet`} language={s.language}>
            {s.code}
          </CodeBlock>
        </figure>
      ))}
    </div>
  );
}
