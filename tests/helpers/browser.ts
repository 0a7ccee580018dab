/** Debian's Chromium driven by playwright-core (browser tests skip with a visible message where there is none). */
import { existsSync } from 'node:fs';
import type { Browser, BrowserContext } from 'playwright-core';
import { launchChromium } from '../../bench/browser.js';
import { describe } from 'vitest';

export const CHROMIUM = process.env['SPLITLLM_CHROMIUM'] ?? '/usr/bin/chromium';
export const haveBrowser = existsSync(CHROMIUM);

/** `describe` that runs only where Chromium is installed (.ci/run installs it), and says so when it is not. */
export function describeWithBrowser(name: string, fn: () => void): void {
  if (!haveBrowser) {
    process.stderr.write(`[splitllm tests] SKIPPED "${name}": no Chromium at ${CHROMIUM} (apt-get install chromium, or set SPLITLLM_CHROMIUM)\n`);
    describe.skip(`${name} (no Chromium at ${CHROMIUM})`, fn);
    return;
  }
  describe(name, fn);
}

/** Headless, and quiet (bench/browser.ts: the same launch as bench/web-edge's). */
export function launchBrowser(): Promise<Browser> {
  return launchChromium(CHROMIUM);
}

/**
 * Records every request a context's pages make, HTTP and WebSocket; a request to any other origin than
 * `origins` is aborted and listed in `foreign`.
 */
export async function guardRequests(context: BrowserContext, origins: string[]): Promise<{ all: string[]; foreign: string[] }> {
  const seen = { all: [] as string[], foreign: [] as string[] };
  const ours = (url: string) => origins.some((o) => url.startsWith(o));
  await context.route('**/*', async (route) => {
    const url = route.request().url();
    seen.all.push(url);
    if (url.startsWith('data:') || ours(url)) await route.continue();
    else {
      seen.foreign.push(url);
      await route.abort();
    }
  });
  context.on('page', (page) =>
    page.on('websocket', (ws) => {
      seen.all.push(ws.url());
      if (!ours(ws.url())) seen.foreign.push(ws.url());
    }),
  );
  return seen;
}
