/**
 * A version's files: path (a download link), size and sha256 digest. Downloads go through
 * fetch so the signed-in token is sent (a plain link cannot carry it for private repositories).
 */
import type { MouseEvent } from 'react';
import { authHeaders, type Repository, type Version } from '../../api/client.ts';
import { bytes, shortDigest } from '../../shared/format.ts';
import { TableScroll } from '../../shared/TableScroll.tsx';

async function download(e: MouseEvent<HTMLAnchorElement>): Promise<void> {
  const a = e.currentTarget;
  if (Object.keys(authHeaders()).length === 0) return; // anonymous: the plain link works for public repositories
  e.preventDefault();
  const res = await fetch(a.href, { headers: authHeaders() });
  if (!res.ok) {
    window.alert(`Download failed: HTTP ${res.status}`);
    return;
  }
  const url = URL.createObjectURL(await res.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = a.pathname.split('/').pop() ?? 'file';
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function FilesTable({ repo, v }: { repo: Repository; v: Version }) {
  return (
    <TableScroll label="Files">
      <table className="files">
        <thead>
          <tr>
            <th scope="col">Path</th>
            <th scope="col">Size</th>
            <th scope="col">sha256</th>
          </tr>
        </thead>
        <tbody>
          {v.files.map((f) => (
            <tr key={f.path}>
              <td data-label="Path">
                <a href={`/v1/repos/${repo.namespace}/${repo.name}/versions/${v.number}/files/${f.path}`} download onClick={download}>
                  {f.path}
                </a>
              </td>
              <td data-label="Size">
                <span title={`${f.size} bytes`}>{bytes(f.size)}</span>
              </td>
              <td data-label="sha256">
                <code title={f.digest}>{shortDigest(f.digest)}</code>
                <span className="visually-hidden">{f.digest}</span>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </TableScroll>
  );
}
