/**
 * Debian's Chromium driven by playwright-core (Playwright cannot download its own browser
 * here), one browser per test file; screenshots go to e2e/artifacts/web (git-ignored,
 * kept by CI as artifacts); axe-core checks pages for accessibility violations.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

export const ARTIFACTS = join(import.meta.dirname, '..', '..', '..', 'artifacts', 'web');
const CHROMIUM = process.env.LOWRANK_CHROMIUM ?? '/usr/bin/chromium';

export const LAPTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export interface Session {
  browser: Browser;
  close: () => Promise<void>;
}

export async function launch(): Promise<Session> {
  if (!existsSync(CHROMIUM))
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/test does), or set LOWRANK_CHROMIUM`);
  // Playwright gives each launch a fresh temporary profile (it refuses --user-data-dir here).
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  return {
    browser,
    close: () => browser.close(),
  };
}

/** A page whose console errors and failed requests are collected, so tests can assert there were none. */
export async function openPage(
  browser: Browser,
  base: string,
  viewport = LAPTOP,
): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ baseURL: base, viewport });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return { context, page, errors };
}

/** Signs in the way a person does: the sign-in page, the token, the button. */
export async function signIn(page: Page, token: string): Promise<void> {
  await page.goto('/signin');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('me').waitFor();
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

const axeSource = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: string[];
}

/** axe-core's WCAG 2.1 A/AA violations on the current page. */
export async function axe(page: Page): Promise<AxeViolation[]> {
  await page.addScriptTag({ path: axeSource });
  // A string, evaluated in the page: this file is type-checked without the DOM library.
  return page.evaluate<AxeViolation[]>(`axe
    .run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } })
    .then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) })))`);
}
