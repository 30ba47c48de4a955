/** The shell: header with navigation and who is signed in, then the page the URL names. */
import { useEffect } from 'react';
import { AdapterPage } from '../features/adapter/AdapterPage.tsx';
import { CatalogPage } from '../features/catalog/CatalogPage.tsx';
import { ComparePage } from '../features/compare/ComparePage.tsx';
import { JobsPage } from '../features/jobs/JobsPage.tsx';
import { SubmitJobPage } from '../features/jobs/SubmitJobPage.tsx';
import { LineagePage } from '../features/lineage/LineagePage.tsx';
import { SignInPage } from '../features/signin/SignInPage.tsx';
import { WhoAmI } from '../features/signin/WhoAmI.tsx';
import { Link, type Location, match, useLocation } from './router.tsx';

function page(loc: Location): { title: string; node: React.ReactNode } {
  let p = match('/repos/:namespace/:name/versions/:ref/lineage', loc.path);
  if (p) {
    const { namespace = '', name = '', ref = '' } = p;
    return { title: `Lineage of ${namespace}/${name}@${ref}`, node: <LineagePage namespace={namespace} name={name} versionRef={ref} /> };
  }
  p = match('/repos/:namespace/:name', loc.path);
  if (p) {
    const { namespace = '', name = '' } = p;
    return { title: `${namespace}/${name}`, node: <AdapterPage namespace={namespace} name={name} version={loc.query.get('v')} /> };
  }
  if (loc.path === '/compare') return { title: 'Compare versions', node: <ComparePage a={loc.query.get('a')} b={loc.query.get('b')} /> };
  if (loc.path === '/jobs') return { title: 'Jobs', node: <JobsPage /> };
  if (loc.path === '/jobs/new') return { title: 'Submit a job', node: <SubmitJobPage /> };
  if (loc.path === '/signin') return { title: 'Sign in', node: <SignInPage next={loc.query.get('next')} /> };
  if (loc.path === '/' || loc.path === '/search') return { title: 'Adapters', node: <CatalogPage query={loc.query} /> };
  return {
    title: 'Not found',
    node: (
      <div className="state state-missing" role="alert">
        <h1>Page not found</h1>
        <p>
          Nothing here at <code>{loc.path}</code>. <Link to="/">Search the catalog</Link>.
        </p>
      </div>
    ),
  };
}

export function App() {
  const loc = useLocation();
  const { title, node } = page(loc);
  useEffect(() => {
    document.title = `${title} · lowrank`;
  }, [title]);
  const current = (path: string) => (loc.path === path ? 'page' : undefined);
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <Link to="/" className="brand">
          lowrank
        </Link>
        <nav aria-label="Main">
          <Link to="/" aria-current={current('/')}>
            Adapters
          </Link>
          <Link to="/compare" aria-current={current('/compare')}>
            Compare
          </Link>
          <Link to="/jobs" aria-current={current('/jobs')}>
            Jobs
          </Link>
          <Link to="/jobs/new" aria-current={current('/jobs/new')}>
            Submit a job
          </Link>
        </nav>
        <WhoAmI />
      </header>
      <main id="main">{node}</main>
    </>
  );
}
