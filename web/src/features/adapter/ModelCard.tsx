/** The version's README.md (its model card), fetched with the caller's token and rendered sanitised. */
import { api, type Repository, type Version } from '../../api/client.ts';
import { useApi } from '../../api/use-api.ts';
import { Markdown, splitFrontMatter } from '../../shared/Markdown.tsx';
import { Loading, ProblemView } from '../../shared/ProblemView.tsx';

const CARD = /^readme\.md$/i;

export function ModelCard({ repo, v }: { repo: Repository; v: Version }) {
  const file = v.files.find((f) => CARD.test(f.path));
  const [text] = useApi(
    (signal) =>
      file
        ? api.GET('/v1/repos/{namespace}/{name}/versions/{ref}/files/{path}', {
            params: { path: { namespace: repo.namespace, name: repo.name, ref: String(v.number), path: file.path } },
            parseAs: 'text',
            signal,
          })
        : Promise.resolve({ data: '', response: new Response('') }),
    [repo.namespace, repo.name, v.number, file?.path],
  );
  if (!file) return <p className="muted">This version has no README.md model card.</p>;
  if (text.status === 'loading') return <Loading what="the model card" />;
  if (text.status === 'error') return <ProblemView problem={text.problem} what="the model card" />;
  const { frontMatter, body } = splitFrontMatter(text.data);
  return (
    <div className="card">
      {frontMatter && (
        <details>
          <summary>Card metadata</summary>
          <pre className="code">{frontMatter}</pre>
        </details>
      )}
      <Markdown text={body} />
    </div>
  );
}
