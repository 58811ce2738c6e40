// A JSON-lines driver of headless Chromium for the Python tests (tests/browser/): one Chromium
// per driver process, commands on stdin, one answer line per command on stdout. Kept tiny so
// the tests' logic stays in Python, next to the real stack they run.
//
//   {"id": 1, "op": "open", "url": "http://..."}            -> {"id": 1, "value": {"page": 1, "status": 200}}
//   {"id": 2, "op": "eval", "page": 1, "fn": "(arg) => ...", "arg": ...} -> {"id": 2, "value": ...}
//   {"id": 3, "op": "close", "page": 1}                     -> {"id": 3, "value": null}
//   {"id": 4, "op": "click", "page": 1, "selector": "#b"}   -> a real mouse click on it
//   {"id": 5, "op": "mouse", "page": 1, "selector": "#b", "action": "down" | "up"}
//                                                  -> the mouse over it, its button pressed or let go
//   {"id": 6, "op": "console", "page": 1}  -> [{"type": "error" | "warning" | "pageerror", "text"}, ...]
//                                             what the page reported since it opened or the last call
// A failed command answers {"id": n, "error": "message"}.
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const executablePath = process.env.XP2P_CHROMIUM || '/usr/bin/chromium';
const profile = mkdtempSync(join(tmpdir(), 'xp2p-chromium-'));
// The flags that work as root on a closed network: without the background-networking ones
// Chromium keeps dialling Google's hosts and gets refused.
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    // A test's own flags (a fake microphone playing a WAV file...), as a JSON list.
    ...JSON.parse(process.env.XP2P_CHROMIUM_ARGS || '[]'),
  ],
});
/** @type {Map<number, import('playwright-core').Page>} */
const pages = new Map();
/** @type {Map<number, {type: string, text: string}[]>} each page's errors and warnings */
const reports = new Map();
let nextPage = 1;

/** @param {any} msg */
function pageOf(msg) {
  const page = pages.get(msg.page);
  if (!page) throw new Error(`no page ${msg.page}`);
  return page;
}

/** @param {any} msg */
async function run(msg) {
  switch (msg.op) {
    case 'open': {
      const page = await context.newPage();
      const id = nextPage++;
      pages.set(id, page);
      /** @type {{type: string, text: string}[]} */
      const reported = [];
      reports.set(id, reported);
      // Errors and warnings only (a CSP refusal, a failed load, an uncaught exception), bounded.
      page.on('console', (m) => {
        if ((m.type() === 'error' || m.type() === 'warning') && reported.length < 200) reported.push({ type: m.type(), text: m.text() });
      });
      page.on('pageerror', (e) => {
        if (reported.length < 200) reported.push({ type: 'pageerror', text: e.message });
      });
      const response = await page.goto(msg.url, { waitUntil: 'domcontentloaded' });
      return { page: id, status: response ? response.status() : 0 };
    }
    case 'eval': {
      const page = pageOf(msg);
      // The function travels as source: it runs in the page, never in this process.
      return await page.evaluate(
        ([fn, arg]) => (0, eval)(fn)(arg),
        [msg.fn, msg.arg ?? null],
      );
    }
    case 'click': {
      // Real input (trusted events, as a person makes them), not a dispatched DOM event.
      await pageOf(msg).locator(msg.selector).click({ timeout: 10_000 });
      return null;
    }
    case 'mouse': {
      const page = pageOf(msg);
      if (msg.action !== 'down' && msg.action !== 'up') throw new Error(`unknown mouse action ${msg.action}`);
      await page.locator(msg.selector).hover({ timeout: 10_000 });
      await (msg.action === 'down' ? page.mouse.down() : page.mouse.up());
      return null;
    }
    case 'console': {
      pageOf(msg);
      return reports.get(msg.page)?.splice(0) ?? [];
    }
    case 'close': {
      const page = pages.get(msg.page);
      pages.delete(msg.page);
      reports.delete(msg.page);
      if (page) await page.close();
      return null;
    }
    default:
      throw new Error(`unknown op ${msg.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ready: context.browser()?.version() ?? 'chromium' }) + '\n');
for await (const line of lines) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line);
  let answer;
  try {
    answer = { id: msg.id, value: await run(msg) };
  } catch (err) {
    answer = { id: msg.id, error: String(err instanceof Error ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await context.close();
rmSync(profile, { recursive: true, force: true });
