/** A version's files: path (a download link), size and sha256 digest. */
import type { Repository, Version } from '../../api/client.ts';
import { bytes, shortDigest } from '../../shared/format.ts';
import { TableScroll } from '../../shared/TableScroll.tsx';

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
                <a href={`/v1/repos/${repo.namespace}/${repo.name}/versions/${v.number}/files/${f.path}`} download>
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
