/**
 * The web catalog in a real browser (Debian's Chromium via playwright-core) against a real
 * registry (PostgreSQL, Redis) serving the built bundle, seeded through the API with real
 * small adapters and their lineage. Each test leaves a screenshot in e2e/artifacts/web.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { axe, LAPTOP, launch, openPage, PHONE, type Session, screenshot, signIn } from './support/browser.ts';
import { type CatalogRegistry, startCatalogRegistry } from './support/catalog-registry.ts';
import { type Seeded, seedCatalog } from './support/seed.ts';

let reg: CatalogRegistry;
let seeded: Seeded;
let session: Session | undefined;

before(async () => {
  reg = await startCatalogRegistry();
  seeded = await seedCatalog(reg.base, reg.prisma);
  session = await launch();
});
after(async () => {
  await session?.close();
});

async function asAda(viewport = LAPTOP): Promise<{ page: Page; errors: string[]; close: () => Promise<void> }> {
  if (!session) throw new Error('no browser');
  const { context, page, errors } = await openPage(session.browser, reg.base, viewport);
  await signIn(page, seeded.tokens.ada);
  return { page, errors, close: () => context.close() };
}

const text = async (l: { textContent: () => Promise<string | null> }) => (await l.textContent()) ?? '';

const api = (token: string, method: string, path: string, body?: unknown) =>
  fetch(`${reg.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

describe('web catalog', () => {
  it('is served by the registry at / with SPA fallback, without shadowing the API', async () => {
    const page = await fetch(`${reg.base}/repos/nlp/support-bot`, { headers: { accept: 'text/html' } });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<div id="root">/);
    const api404 = await fetch(`${reg.base}/v1/no-such-route`, { headers: { accept: 'text/html' } });
    assert.equal(api404.status, 404);
    assert.equal(api404.headers.get('content-type'), 'application/problem+json; charset=utf-8');
    const resolve404 = await fetch(`${reg.base}/nlp/support-bot/resolve/main/nope.json`, { headers: { accept: 'text/html' } });
    assert.notEqual(resolve404.headers.get('content-type')?.startsWith('text/html'), true, 'HF resolve URLs never fall back to the page');
    const asset = await fetch(`${reg.base}/assets/missing.js`);
    assert.equal(asset.status, 404);
  });

  it('searches with filters and sorting, with empty and signed-out states', async () => {
    if (!session) throw new Error('no browser');
    const anon = await openPage(session.browser, reg.base);
    await anon.page.goto('/');
    await anon.page.getByRole('link', { name: 'nlp/support-bot' }).waitFor();
    assert.equal(await anon.page.getByRole('link', { name: 'nlp/billing-bot' }).count(), 0, 'internal repositories need a sign-in');
    await anon.context.close();

    const { page, errors, close } = await asAda();
    await page.goto('/');
    await page.getByRole('link', { name: 'nlp/helpdesk' }).waitFor();
    await page.getByLabel('Search adapters').fill('support');
    await page.getByLabel('Team').fill('nlp');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(/q=support/);
    await page.getByRole('link', { name: 'nlp/support-bot', exact: true }).waitFor();
    const names = () => page.locator('table.results tbody tr td:first-child a').allTextContents();
    assert.ok(
      (await names()).every((n) => n.startsWith('nlp/')),
      'team filter',
    );
    assert.ok(!(await names()).includes('nlp/billing-bot'), 'full-text query');
    await page.getByRole('button', { name: /^Rank/ }).click();
    await page.waitForURL(/sort=rank/);
    assert.equal(await page.getByRole('columnheader', { name: /Rank/ }).getAttribute('aria-sort'), 'ascending');
    const ranks = await page.locator('td[data-label="Rank"]').allTextContents();
    assert.deepEqual(
      ranks,
      [...ranks].sort((a, b) => Number(a) - Number(b)),
    );
    await screenshot(page, 'catalog-search');

    await page.getByLabel('Method').fill('dora');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('heading', { name: 'No adapters found' }).waitFor();
    await screenshot(page, 'catalog-empty');
    assert.deepEqual(errors, []);
    await close();
  });

  it('opens an adapter: versions with tags, sanitised model card, files, config, pull snippets, diagnostics', async () => {
    const { page, errors, close } = await asAda();
    await page.goto('/');
    await page.getByRole('link', { name: 'nlp/support-bot', exact: true }).click();
    await page.waitForURL(/\/repos\/nlp\/support-bot$/);
    await page.getByRole('heading', { name: /Version 2/ }).waitFor();
    const versions = page.getByRole('navigation', { name: 'Versions' });
    const v2 = versions.getByRole('listitem').filter({ has: page.getByRole('link', { name: 'v2', exact: true }) });
    assert.deepEqual(await v2.locator('.tag').allTextContents(), ['latest', 'prod']);
    await page.getByRole('heading', { name: 'Support bot' }).waitFor();
    assert.equal(await page.evaluate<boolean>("'__cardScriptRan' in window"), false, 'card script never runs');
    assert.equal(await page.locator('.markdown script, .markdown [onerror]').count(), 0);
    const files = await text(page.locator('table.files'));
    assert.match(files, /adapter_model\.safetensors/);
    assert.match(files, /KiB/);
    const digest = await page.locator('table.files code').first().getAttribute('title');
    assert.match(digest ?? '', /^sha256:[0-9a-f]{64}$/);
    for (const snippet of ['lora pull nlp/support-bot@2', 'PeftModel.from_pretrained', 'snapshot_download', 'vllm serve']) {
      assert.ok((await text(page.locator('.snippets'))).includes(snippet), snippet);
    }
    assert.match(await text(page.getByLabel('adapter_config.json')), /"peft_type": "LORA"/);
    // Downloads carry the token (the link itself cannot): the bytes arrive whole.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'adapter_config.json' }).click()]);
    assert.equal(download.suggestedFilename(), 'adapter_config.json');
    assert.match(readFileSync((await download.path()) ?? '', 'utf8'), /"base_model_name_or_path"/);
    await page.getByRole('img', { name: /Singular values of ΔW per module/ }).waitFor();
    await page.getByRole('img', { name: /Loss curve/ }).waitFor();
    assert.equal(await page.locator('table.erank tbody tr').count(), 4, 'one effective-rank row per module');
    await screenshot(page, 'adapter');

    // A version without stored spectra or loss says so, rather than drawing nothing.
    await page.goto('/repos/nlp/support-bot-transfer');
    await page.getByText('task description').waitFor();
    await page.getByRole('row', { name: /discriminator Accuracy/i }).waitFor();
    // A generated adapter: its task, the memorisation check as facts and a score, its generator.
    await page.goto('/repos/nlp/support-bot-generated');
    await page.getByText('Answer refund questions in one sentence.').waitFor();
    await page.getByRole('row', { name: /memorisation cosine/i }).waitFor();
    await page.getByText('memorisation nearest Member').waitFor();
    await page.goto('/repos/nlp/support-bot-generated/versions/1/lineage');
    await page.getByTestId('lineage-graph').getByText('generated by').waitFor();
    await page.getByTestId('lineage-graph').getByRole('link', { name: 'nlp/task-generator@1' }).waitFor();
    assert.deepEqual(errors, []);
    await close();
  });

  it('walks the lineage graph: merge weights, compression child, click to navigate, 50+ nodes', async () => {
    const { page, errors, close } = await asAda();
    await page.goto('/repos/nlp/helpdesk?v=2');
    await page.getByRole('link', { name: 'Lineage graph' }).click();
    await page.waitForURL(/\/repos\/nlp\/helpdesk\/versions\/2\/lineage/);
    const graph = page.getByTestId('lineage-graph');
    for (const node of ['nlp/helpdesk@2', 'nlp/helpdesk@1', 'nlp/support-bot@2', 'nlp/billing-bot@1', 'hf:HuggingFaceTB/SmolLM2-135M']) {
      await graph.getByText(node, { exact: true }).first().waitFor();
    }
    await graph.getByText('merged from · w 0.7').waitFor();
    await graph.getByText('merged from · w 0.3').waitFor();
    await graph.getByText('compressed from').waitFor();
    await screenshot(page, 'lineage');

    await graph.getByRole('link', { name: 'nlp/support-bot@2' }).click();
    await page.waitForURL(/\/repos\/nlp\/support-bot\/versions\/2\/lineage/);
    await page.getByTestId('lineage-graph').getByText('transferred from').waitFor();
    await page.getByTestId('lineage-graph').getByRole('link', { name: 'nlp/helpdesk@1' }).waitFor();

    await page.goto('/repos/vision/backbone/versions/1/lineage');
    const count = await text(page.getByRole('status').filter({ hasText: 'nodes' }));
    assert.ok(Number(/(\d+) nodes/.exec(count)?.[1]) >= 50, count);
    // Readable: it opens on the root at a zoom where labels keep their size (>= 0.6).
    const root = await page.locator('.lnode-root').boundingBox();
    assert.ok(root && root.height >= 0.6 * 44, `root node is ${root?.height}px tall`);
    // Readable: no two nodes overlap after layout.
    const boxes = await page.locator('.react-flow__node').evaluateAll((els) =>
      els.map((e) => {
        const r = e.getBoundingClientRect();
        return [r.left, r.top, r.right, r.bottom];
      }),
    );
    assert.ok(boxes.length >= 50);
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const [a, b] = [boxes[i] ?? [], boxes[j] ?? []];
        const overlap =
          (a[0] ?? 0) < (b[2] ?? 0) - 0.5 &&
          (b[0] ?? 0) < (a[2] ?? 0) - 0.5 &&
          (a[1] ?? 0) < (b[3] ?? 0) - 0.5 &&
          (b[1] ?? 0) < (a[3] ?? 0) - 0.5;
        assert.ok(!overlap, `nodes ${i} and ${j} overlap`);
      }
    await screenshot(page, 'lineage-55-nodes');
    assert.deepEqual(errors, []);
    await close();
  });

  it('compares two versions: config diff, metrics, spectra overlaid', async () => {
    const { page, errors, close } = await asAda();
    await page.goto('/repos/nlp/helpdesk?v=2');
    await page.getByRole('link', { name: 'Compare with v1' }).click();
    await page.waitForURL(/\/compare\?a=nlp%2Fhelpdesk%401&b=nlp%2Fhelpdesk%402/);
    await page.getByRole('heading', { name: /Config: \d+ of \d+ fields differ/ }).waitFor();
    const r = page.getByRole('row', { name: /^r changed/ });
    assert.match(await text(r), /16/);
    await page.getByRole('img', { name: /Singular values of ΔW for / }).waitFor();
    const legend = await text(page.locator('.spectra .legend'));
    assert.match(legend, /nlp\/helpdesk@1/);
    assert.match(legend, /nlp\/helpdesk@2/);
    await page.getByText('Loss curve: not computed yet.').waitFor();
    await screenshot(page, 'compare');
    assert.deepEqual(errors, []);
    await close();
  });

  it('shows a job’s progress live over SSE, and cancels another', async () => {
    const submit = async (name: string) => {
      const r = await api(seeded.tokens.ada, 'POST', '/v1/jobs', {
        kind: 'CompressionJob',
        metadata: { name },
        spec: {
          mode: 'rank-reduction',
          source: { adapter: { repository: 'nlp/helpdesk', version: 1 } },
          rankPolicy: { energy: { threshold: 0.9 } },
          output: { repository: 'nlp/helpdesk' },
        },
      });
      const body: any = await r.json();
      assert.equal(r.status, 201, JSON.stringify(body));
      return body.id as string;
    };
    const watched = await submit('watched-job');
    const other = await submit('cancel-me');
    const { page, errors, close } = await asAda();
    await page.goto('/jobs');
    const card = page.getByTestId(`job-${watched}`);
    await card.getByText('● live').waitFor();
    // Report progress as the worker does; the page updates without a reload.
    for (const step of [10, 40]) {
      const r = await api(seeded.tokens.ada, 'POST', `/v1/jobs/${watched}/progress`, {
        status: 'running',
        progress: { step, totalSteps: 100, loss: 2 / step, etaSeconds: 100 - step },
      });
      assert.equal(r.status, 200);
      await card.getByTestId('job-percent').getByText(`${step}%`).waitFor();
    }
    assert.equal(await text(card.getByTestId('job-status')), 'running');
    assert.equal(await text(card.getByTestId('job-loss')), '0.05');
    await screenshot(page, 'jobs-progress');
    await api(seeded.tokens.ada, 'POST', `/v1/jobs/${watched}/progress`, { status: 'succeeded', progress: { step: 100, totalSteps: 100 } });
    await card.getByTestId('job-status').getByText('succeeded').waitFor();
    // The worker's log lines, as the executor ships them, open under the card.
    const shipped = await api(seeded.tokens.ada, 'POST', `/v1/jobs/${watched}/logs`, {
      attempt: 1,
      lines: [
        { stream: 'stdout', text: '{"event":"progress","stage":"reducing rank"}' },
        { stream: 'executor', text: 'worker ended: exit status 0' },
      ],
    });
    assert.equal(shipped.status, 204);
    await card.getByText('Worker log').click();
    await card
      .getByTestId('worker-log')
      .getByText(/worker ended: exit status 0/)
      .waitFor();

    const second = page.getByTestId(`job-${other}`);
    await second.getByRole('button', { name: 'Cancel cancel-me' }).click();
    await second.getByTestId('job-status').getByText('cancelled').waitFor();
    const stored: any = await (await api(seeded.tokens.ada, 'GET', `/v1/jobs/${other}`)).json();
    assert.equal(stored.status, 'cancelled');
    assert.deepEqual(errors, []);
    await close();
  });

  it('submits a job from the schema-generated form and shows the server’s validation messages', async () => {
    const { page, close } = await asAda();
    await page.goto('/jobs/new');
    await page.getByLabel('mode').selectOption('train');
    await page.locator('[id="f-spec.output.repository"]').fill('nlp/support-bot');
    await page.getByRole('button', { name: 'Submit' }).click();
    const errors = page.getByTestId('job-errors');
    await errors.getByText('mode train needs baseModel, dataset and method').waitFor();
    await screenshot(page, 'job-invalid');
    // A field-level message lands beside its field.
    const seed = page.locator('[id="f-spec.seed"]');
    await seed.fill('-3');
    await page.getByRole('button', { name: 'Check' }).click();
    await errors.getByRole('link', { name: 'spec.seed' }).waitFor();
    assert.equal(await seed.getAttribute('aria-invalid'), 'true');
    await close();
  });

  it('respects authorization: 401 asks to sign in, 404 for private repositories of other teams, 403 for a read token', async () => {
    if (!session) throw new Error('no browser');
    const anon = await openPage(session.browser, reg.base);
    await anon.page.goto('/repos/vision/secret');
    await anon.page.getByRole('heading', { name: 'Sign in to see vision/secret' }).waitFor();
    await anon.page.goto('/jobs');
    await anon.page.getByRole('heading', { name: 'Sign in to see your jobs' }).waitFor();
    await screenshot(anon.page, 'signed-out');
    await anon.context.close();

    const { page, close } = await asAda();
    await page.goto('/repos/vision/secret');
    await page.getByRole('heading', { name: 'Not found' }).waitFor();
    await close();

    // Ada's read-only token lists her jobs but may not cancel them.
    const job: any = await (
      await api(seeded.tokens.ada, 'POST', '/v1/jobs', {
        kind: 'CompressionJob',
        metadata: { name: 'read-only-view' },
        spec: {
          mode: 'rank-reduction',
          source: { adapter: { repository: 'nlp/helpdesk', version: 1 } },
          rankPolicy: { energy: { threshold: 0.9 } },
          output: { repository: 'nlp/helpdesk' },
        },
      })
    ).json();
    const reader = await openPage(session.browser, reg.base);
    await signIn(reader.page, seeded.tokens.adaRead);
    await reader.page.goto('/jobs');
    const card = reader.page.getByTestId(`job-${job.id}`);
    await card.getByRole('button', { name: 'Cancel read-only-view' }).click();
    await card.getByRole('heading', { name: 'Not allowed' }).waitFor();
    await screenshot(reader.page, 'forbidden');
    await reader.context.close();
  });

  it('has no serious accessibility violations (axe-core) at laptop and phone widths', async () => {
    for (const viewport of [LAPTOP, PHONE]) {
      const { page, close } = await asAda(viewport);
      const pages: [string, string][] = [
        ['/', 'nlp/helpdesk'],
        ['/repos/nlp/support-bot', 'Version 2'],
        ['/repos/nlp/helpdesk/versions/2/lineage', 'nlp/billing-bot@1'],
        ['/compare?a=nlp/helpdesk@1&b=nlp/helpdesk@2', 'Diagnostics, overlaid'],
        ['/jobs', 'Jobs'],
        ['/jobs/new', 'Submit a job'],
      ];
      for (const [path, text] of pages) {
        await page.goto(path);
        await page.getByText(text).first().waitFor();
        const serious = (await axe(page)).filter((v) => v.impact === 'serious' || v.impact === 'critical');
        assert.deepEqual(serious, [], `${path} at ${viewport.width}px`);
        if (viewport === PHONE) {
          const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
          const culprits = await page.evaluate<string[]>(
            `[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map((e) => e.tagName + '.' + e.className)`,
          );
          assert.ok(overflow <= 1, `${path} scrolls sideways by ${overflow}px on a phone: ${culprits.join(', ')}`);
        }
      }
      await page.goto('/repos/nlp/support-bot');
      await page.getByRole('heading', { name: /Version 2/ }).waitFor();
      await screenshot(page, `adapter-${viewport.width}px`);
      await close();
    }
  });
});
