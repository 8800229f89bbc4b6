#!/usr/bin/env node
// End-to-end test of the web client against the real chat-server binary, in the system Chromium.
//
//   CHAT_SERVER_BIN   path to chat-server (default: $CARGO_TARGET_DIR/debug/chat-server, else
//                     ../target/debug/chat-server relative to web/)
//   CHROMIUM_PATH     default /usr/bin/chromium (see scripts/ensure-chromium.sh)
//   E2E_SCREENSHOTS   where screenshots go (default: e2e/screenshots, ignored by git; set it to
//                     ../docs/screenshots to refresh the README's pictures)
//   E2E_ONLY          run only the tests whose name contains this text
//
// `npm run e2e` builds web/dist first; run directly, this builds it only if it is missing. Ends with "e2e: N passed, M failed"; exits 1 on failure.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoRoot = path.resolve(webDir, '..');
const distDir = path.join(webDir, 'dist');
// Not docs/screenshots by default: every run renders slightly different bytes, and a test run must
// leave the checkout as it found it.
const shotsDir = path.resolve(process.env.E2E_SCREENSHOTS ?? path.join(webDir, 'e2e', 'screenshots'));
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

function serverBinary() {
  if (process.env.CHAT_SERVER_BIN) return path.resolve(process.env.CHAT_SERVER_BIN);
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR) : path.join(repoRoot, 'target');
  return path.join(targetDir, 'debug', 'chat-server');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Server lifecycle

const cleanups = [];
/** Each server's working directory, with its database. */
const serverDirs = [];
let serverProc = null;
const serverProcs = [];
const serverLog = [];

/** Starts a chat-server with its own database; `env` adds settings. The first one is `serverProc`. */
async function startServer(env = {}) {
  const bin = serverBinary();
  if (!existsSync(bin)) throw new Error(`chat-server not found at ${bin} (build it with \`cargo build -p server\` or set CHAT_SERVER_BIN)`);
  const port = await freePort();
  const work = mkdtempSync(path.join(tmpdir(), 'chat-e2e-server-'));
  serverDirs.push(work);
  const proc = spawn(bin, [], {
    cwd: work,
    env: {
      ...process.env,
      CHAT__SERVER__PORT: String(port),
      CHAT__STORAGE__URL: path.join(work, 'chat.db'),
      CHAT__WEB__DIST_DIR: distDir,
      CHAT__ASSISTANT__KIND: 'dummy',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (chunk) => {
    serverLog.push(String(chunk));
    if (serverLog.length > 400) serverLog.splice(0, serverLog.length - 400);
  };
  serverProc ??= proc;
  serverProcs.push(proc);
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exited = null;
  proc.on('exit', (code, signal) => {
    exited = { code, signal };
  });

  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`chat-server exited before it was ready (code ${exited.code}, signal ${exited.signal})`);
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.ok) return base;
    } catch {
      // not listening yet
    }
    await sleep(150);
  }
  throw new Error('chat-server did not become ready on /readyz within 60 s');
}

async function stopServer(proc = serverProc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const timedOut = await Promise.race([gone.then(() => false), sleep(5000).then(() => true)]);
  if (timedOut) {
    proc.kill('SIGKILL');
    await gone;
  }
}

// ---------------------------------------------------------------------------------------------
// Test harness: each test gets a fresh page; any JS dialog or page error fails it.

const results = [];
const only = process.env.E2E_ONLY;
const dialogs = [];
const pageErrors = [];

async function test(name, fn) {
  if (only && !name.includes(only)) return;
  const dialogsBefore = dialogs.length;
  const errorsBefore = pageErrors.length;
  const started = Date.now();
  try {
    await fn();
    if (dialogs.length > dialogsBefore) throw new Error(`a JavaScript dialog opened: ${dialogs.slice(dialogsBefore).join(', ')}`);
    if (pageErrors.length > errorsBefore) throw new Error(`page error: ${pageErrors.slice(errorsBefore).join(' | ')}`);
    results.push({ name, ok: true });
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`not ok - ${name}\n    ${String(err?.stack ?? err).split('\n').slice(0, 6).join('\n    ')}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function watch(page) {
  page.on('dialog', async (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss().catch(() => undefined);
  });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  return page;
}

const composer = (page) => page.getByRole('textbox', { name: 'Message' });
const nav = (page) => page.getByRole('navigation', { name: 'Conversations' });
const log = (page) => page.getByRole('log');

async function open(page, base, hash = '') {
  await page.goto(`${base}/${hash}`);
  await composer(page).waitFor();
  // Both the conversation list and the open conversation have finished loading.
  await page.waitForFunction(
    () =>
      !document.querySelector('[role=log][aria-busy=true]') &&
      (document.querySelector('nav li') || /No conversations yet/.test(document.querySelector('nav')?.textContent ?? '')) &&
      !/Loading conversations/.test(document.querySelector('nav')?.textContent ?? ''),
    null,
    { timeout: 15_000 },
  );
}

/** Opens an empty chat: the conversation is created by its first send, so the list stays as it was. */
async function newChat(page) {
  const before = await nav(page).getByRole('listitem').count();
  await nav(page).getByRole('button', { name: 'New chat' }).first().click();
  await log(page).getByText('Start a new conversation').waitFor();
  assert(new URL(page.url()).hash === '#/new', `a new chat has its own address (${page.url()})`);
  const after = await nav(page).getByRole('listitem').count();
  assert(after === before, `New chat adds nothing to the list before a message is sent (${before} then ${after})`);
}

/** Sends `text` with Enter and waits until the streamed reply is complete. Returns the reply's text and what was seen while streaming. */
async function sendAndWait(page, text) {
  const assistantsBefore = await log(page).locator('article[aria-label="Assistant"]:not([data-state])').count();
  await page.evaluate(() => {
    const seen = { texts: new Set(), stop: false };
    window.__e2eStream = seen;
    const observer = new MutationObserver(() => {
      const el = document.querySelector('article[data-state="streaming"] .message-body');
      if (el && el.textContent && !el.textContent.includes('Thinking')) seen.texts.add(el.textContent);
      if ([...document.querySelectorAll('button')].some((b) => b.textContent === 'Stop')) seen.stop = true;
    });
    observer.observe(document.body, { subtree: true, childList: true, characterData: true });
    window.__e2eObserver = observer;
  });
  await composer(page).fill(text);
  await composer(page).press('Enter');
  await page.waitForFunction(
    (n) => document.querySelectorAll('article[aria-label="Assistant"]:not([data-state])').length === n + 1,
    assistantsBefore,
    { timeout: 30_000 },
  );
  const seen = await page.evaluate(() => {
    window.__e2eObserver.disconnect();
    return { partials: window.__e2eStream.texts.size, sawStop: window.__e2eStream.stop };
  });
  const reply = await log(page).locator('article[aria-label="Assistant"]').last().innerText();
  return { reply, ...seen };
}

// ---------------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath}: run scripts/ensure-chromium.sh`);
  if (!existsSync(path.join(distDir, 'index.html'))) {
    console.log('e2e: web/dist is missing, building it');
    const build = spawnSync('npm', ['run', 'build'], { cwd: webDir, stdio: 'inherit' });
    if (build.status !== 0) throw new Error('npm run build failed');
  }
  mkdirSync(shotsDir, { recursive: true });

  // Words 80 ms apart (twice the default): a reply of seven words still streams in several
  // renders when the browser is slowed down by a busy machine.
  const base = await startServer({ CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS: '80' });
  console.log(`e2e: chat-server ready at ${base}`);

  const profile = mkdtempSync(path.join(tmpdir(), 'chat-e2e-chromium-'));
  cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: DESKTOP,
    colorScheme: 'light',
    reducedMotion: 'reduce',
    // chat-server sends a strict CSP (script-src 'self'); bypassing it lets axe be injected, and
    // means the <script> check below proves the client itself keeps HTML inert, not the CSP.
    bypassCSP: true,
  });
  cleanups.unshift(() => context.close());
  context.setDefaultTimeout(15_000);
  const fresh = async (viewport = DESKTOP) => {
    for (const p of context.pages()) await p.close();
    const page = watch(await context.newPage());
    await page.setViewportSize(viewport);
    await page.emulateMedia({ colorScheme: 'light', reducedMotion: 'reduce' });
    return page;
  };

  let chatHash = '';
  let firstReply = '';

  await test('send a message and see the reply stream in', async () => {
    const page = await fresh();
    await open(page, base);
    await nav(page).waitFor();
    await newChat(page);
    const send = page.getByRole('button', { name: 'Send', exact: true });
    assert(await send.isDisabled(), 'Send is disabled while the message is empty');
    const { reply, partials, sawStop } = await sendAndWait(page, 'Hello from the e2e test');
    assert(sawStop, 'a Stop button was shown while the reply streamed');
    assert(partials >= 2, `the reply appeared piece by piece (saw ${partials} partial texts)`);
    assert(reply.trim().length > 0, 'the reply is not empty');
    await log(page).locator('article[aria-label="You"]').getByText('Hello from the e2e test').waitFor();
    assert(!(await page.getByRole('button', { name: 'Stop', exact: true }).isVisible()), 'Stop is gone after the reply');
    assert((await composer(page).inputValue()) === '', 'the composer is cleared after sending');
    firstReply = reply.trim();
    chatHash = new URL(page.url()).hash;
    assert(chatHash.startsWith('#/c/'), `the URL names the conversation (${page.url()})`);
  });

  await test('reload shows the history', async () => {
    const page = await fresh();
    await open(page, base, chatHash);
    await log(page).getByText('Hello from the e2e test').waitFor();
    const reply = await log(page).locator('article[aria-label="Assistant"]').last().innerText();
    assert(reply.trim() === firstReply, `the stored reply equals the streamed one ("${reply.trim()}" vs "${firstReply}")`);
    const title = await nav(page).locator('[aria-current="page"]').innerText();
    assert(title.includes('Hello from the e2e test'), `a new chat is titled after its first message (got "${title}")`);
  });

  await test('new chat, rename and delete with confirmation', async () => {
    const page = await fresh();
    await open(page, base);
    await newChat(page);
    await sendAndWait(page, 'Rename me');
    const current = nav(page).locator('li:has([aria-current="page"])');
    await current.getByRole('button', { name: 'Rename me', exact: true }).waitFor();

    await current.getByRole('button', { name: 'Rename Rename me' }).click();
    const input = nav(page).getByRole('textbox', { name: 'Conversation title' });
    const widths = await input.evaluate((el) => ({ field: el.getBoundingClientRect().width, list: el.closest('ul').getBoundingClientRect().width }));
    assert(widths.field > widths.list * 0.8, `the title field takes the list's width, its buttons below it (${widths.field} of ${widths.list} px)`);
    await input.fill('Renamed by e2e');
    await input.press('Enter');
    await nav(page).getByRole('button', { name: 'Renamed by e2e', exact: true }).waitFor();
    assert((await page.getByRole('heading', { level: 1 }).innerText()) === 'Renamed by e2e', 'the header shows the new title');
    await page.reload();
    await nav(page).getByRole('button', { name: 'Renamed by e2e', exact: true }).waitFor();

    const count = await nav(page).getByRole('listitem').count();
    await nav(page).getByRole('button', { name: 'Delete Renamed by e2e' }).click();
    const dialog = page.getByRole('alertdialog');
    await dialog.waitFor();
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'detached' });
    assert((await nav(page).getByRole('listitem').count()) === count, 'Cancel keeps the conversation');

    await nav(page).getByRole('button', { name: 'Delete Renamed by e2e' }).click();
    await page.getByRole('alertdialog').getByRole('button', { name: 'Delete' }).click();
    await nav(page).getByRole('button', { name: 'Renamed by e2e', exact: true }).waitFor({ state: 'detached' });
    await page.waitForFunction(() => document.activeElement?.classList.contains('new-chat'));
    await page.reload();
    await composer(page).waitFor();
    await nav(page).getByRole('listitem').first().waitFor();
    assert((await nav(page).getByRole('button', { name: 'Renamed by e2e', exact: true }).count()) === 0, 'the deletion persisted');
  });

  let markdownHash = '';
  await test('markdown in a message: code block, list and link', async () => {
    const page = await fresh();
    await open(page, base);
    await newChat(page);
    const text = ['Here is some code:', '', '```js', 'const answer = 42;', '```', '', '- first item', '- second item', '', 'See [the example](https://example.com/).'].join('\n');
    await sendAndWait(page, text);
    const mine = log(page).locator('article[aria-label="You"]').last();
    const code = mine.locator('pre code');
    assert((await code.innerText()).trim() === 'const answer = 42;', 'the fenced code is in a code block');
    assert((await code.getAttribute('class'))?.includes('hljs'), 'the code block is highlighted');
    assert((await mine.locator('pre code .hljs-keyword').first().innerText()) === 'const', 'keywords are marked up');
    const items = await mine.locator('ul > li').allInnerTexts();
    assert(items.join('|') === 'first item|second item', `the list renders as a list (${items.join('|')})`);
    const link = mine.getByRole('link', { name: 'the example' });
    assert((await link.getAttribute('target')) === '_blank', 'links open in a new tab');
    assert((await link.getAttribute('rel')) === 'noopener noreferrer', 'links have rel="noopener noreferrer"');
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    await mine.getByRole('button', { name: 'Copy', exact: true }).click();
    await mine.locator('.message-actions').getByRole('button', { name: 'Copied', exact: true }).waitFor();
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert(copied === text, `Copy puts the message as written on the clipboard (${JSON.stringify(copied)})`);
    assert((await mine.locator('.code-language').innerText()) === 'js', 'the code block names its language');
    await mine.getByRole('button', { name: 'Copy code', exact: true }).click();
    await mine.locator('.code-copy').getByRole('button', { name: 'Copied', exact: true }).waitFor();
    const copiedCode = await page.evaluate(() => navigator.clipboard.readText());
    assert(copiedCode === 'const answer = 42;', `Copy code puts the code alone on the clipboard (${JSON.stringify(copiedCode)})`);
    markdownHash = new URL(page.url()).hash;
  });

  await test('a long line of code scrolls in its block, not the page; typed line breaks stay', async () => {
    const longLine = `const ${'veryLongIdentifier_'.repeat(12)} = 1;`;
    for (const viewport of [DESKTOP, PHONE]) {
      const page = await fresh(viewport);
      await open(page, base, markdownHash);
      await sendAndWait(page, ['```js', longLine, '```', '', 'line one', 'line two'].join('\n'));
      const layout = await page.evaluate(() => {
        const pre = [...document.querySelectorAll('article[aria-label="You"] pre')].at(-1);
        return { page: document.documentElement.scrollWidth, window: window.innerWidth, pre: pre?.clientWidth ?? 0, code: pre?.scrollWidth ?? 0 };
      });
      assert(layout.page <= layout.window, `the page does not scroll sideways at ${viewport.width} px (${layout.page} > ${layout.window})`);
      assert(layout.code > layout.pre, `the code block scrolls inside itself (${layout.code} <= ${layout.pre})`);
      assert(await page.getByRole('button', { name: 'Send', exact: true }).isVisible(), 'Send stays on screen');
      const box = await page.getByRole('button', { name: 'Send', exact: true }).boundingBox();
      assert(box && box.x + box.width <= viewport.width, `Send is within the window (${JSON.stringify(box)})`);
      const typed = log(page).locator('article[aria-label="You"]').last().locator('p').last();
      const lines = await typed.evaluate((p) => {
        const range = document.createRange();
        range.selectNodeContents(p);
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
      });
      assert(lines === 2, `"line one" and "line two" stay on two lines (${lines})`);
    }
  });

  await test('a wide table keeps its words whole and scrolls in its message', async () => {
    const page = await fresh(PHONE);
    await open(page, base, markdownHash);
    const url = `https://example.com/${'a'.repeat(150)}`;
    await sendAndWait(page, ['| Name | Address |', '| --- | --- |', `| **bold** | ${url} |`].join('\n'));
    const table = await page.evaluate(() => {
      const table = [...document.querySelectorAll('article[aria-label="You"] table')].at(-1);
      const lines = (element) => {
        const range = document.createRange();
        range.selectNodeContents(element);
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
      };
      const cells = [...(table?.querySelectorAll('th, td') ?? [])].slice(0, 3);
      return { lines: cells.map(lines), width: table?.clientWidth ?? 0, content: table?.scrollWidth ?? 0, page: document.documentElement.scrollWidth };
    });
    assert(table.lines.join() === '1,1,1', `"Name", "Address" and "bold" each stay whole, on one line (${table.lines.join()})`);
    assert(table.content > table.width, `the table scrolls inside itself (${table.content} <= ${table.width})`);
    assert(table.page <= PHONE.width, `the page does not scroll sideways (${table.page})`);
    const cue = await page.evaluate(() => {
      const style = getComputedStyle([...document.querySelectorAll('article[aria-label="You"] table')].at(-1));
      return { shadows: style.backgroundImage.match(/radial-gradient/g)?.length ?? 0, attachment: style.backgroundAttachment };
    });
    assert(cue.shadows === 2 && cue.attachment === 'local, local, scroll, scroll', `shadows at its edges show the table scrolls (${cue.shadows}, ${cue.attachment})`);
  });

  await test('HTML in a message stays visible text and never runs', async () => {
    const page = await fresh();
    await page.addInitScript(() => {
      window.__xss = 0;
    });
    await open(page, base, markdownHash);
    const evil = '<script>alert(1)</script> <img src=x onerror="window.__xss=1;alert(2)">';
    await sendAndWait(page, evil);
    const mine = log(page).locator('article[aria-label="You"]').last();
    assert((await mine.innerText()).includes('<script>alert(1)</script>'), 'the script tag is shown as text');
    assert((await log(page).locator('script, img').count()) === 0, 'no script or img element was created');
    await page.reload();
    await log(page).getByText('<script>alert(1)</script>', { exact: false }).first().waitFor();
    await sleep(300);
    assert((await page.evaluate(() => window.__xss)) === 0, 'no injected handler ran');
  });

  await test('older messages load when scrolling up, without moving the view', async () => {
    const created = await fetch(`${base}/api/v1/conversations`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ title: 'Long conversation' }),
    });
    assert(created.status === 201, `creating a conversation answers 201 (got ${created.status})`);
    const { id } = await created.json();
    const seed = async (i) => {
      const res = await fetch(`${base}/api/v1/conversations/${id}/messages`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ content: `Seed message ${i}` }),
      });
      assert(res.status === 201, `a plain JSON send answers 201 (got ${res.status})`);
    };
    // 27 exchanges = 54 messages: one page of 50 and an older page of 4.
    for (let i = 0; i < 27; i += 3) await Promise.all([seed(i), seed(i + 1), seed(i + 2)]);

    const page = await fresh();
    await open(page, base, `#/c/${id}`);
    const articles = log(page).locator('article');
    await page.waitForFunction(() => document.querySelectorAll('[role=log] article').length >= 50);
    assert((await articles.count()) === 50, `the newest page holds 50 messages (got ${await articles.count()})`);
    await log(page).getByRole('button', { name: 'Load older messages' }).waitFor();
    const firstBefore = await articles.first().elementHandle();
    const topBefore = await page.evaluate((el) => {
      const logEl = document.querySelector('[role=log]');
      logEl.scrollTop = 0;
      logEl.dispatchEvent(new Event('scroll'));
      return el.getBoundingClientRect().top;
    }, firstBefore);
    await page.waitForFunction(() => document.querySelectorAll('[role=log] article').length === 54);
    await sleep(100);
    const topAfter = await page.evaluate((el) => el.getBoundingClientRect().top, firstBefore);
    assert(Math.abs(topAfter - topBefore) <= 2, `the message that was on top stays put (${topBefore} -> ${topAfter})`);
    assert((await log(page).getByRole('button', { name: 'Load older messages' }).count()) === 0, 'no more older pages');
    assert((await articles.first().innerText()).includes('Seed message'), 'the oldest message is a seed message');

    // Read up there, the newest messages are a button away.
    const jump = page.getByRole('button', { name: 'Jump to latest' });
    await jump.waitFor();
    const box = await jump.boundingBox();
    const view = await log(page).boundingBox();
    assert(box && view && box.y + box.height <= view.y + view.height && box.y >= view.y + view.height - 80, `the button sits at the bottom of the messages' view (${JSON.stringify(box)} in ${JSON.stringify(view)})`);
    await jump.click();
    const left = await page.evaluate(() => {
      const logEl = document.querySelector('[role=log]');
      return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight;
    });
    assert(left < 2, `the view is at the newest message (${left} px above it)`);
    await jump.waitFor({ state: 'detached' });
    assert(await page.evaluate(() => document.activeElement?.tagName === 'TEXTAREA'), 'the focus goes to the message box, next to the newest message');
  });

  await test('keyboard: Tab reaches the controls with a visible focus outline', async () => {
    const page = await fresh();
    await open(page, base, markdownHash);
    await page.locator('body').click({ position: { x: 5, y: 790 } });
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate(() => document.activeElement?.id === 'composer-input');
    }
    assert(reached, 'Tab reaches the message box');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert(outline !== 'none', `focus is visible (outline-style ${outline})`);
    await page.keyboard.type('Typed with the keyboard');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line');
    assert((await composer(page).inputValue()) === 'Typed with the keyboard\nsecond line', 'Shift+Enter adds a line');
  });

  await test('theme toggle switches and is remembered', async () => {
    const page = await fresh();
    await open(page, base, markdownHash);
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const light = await bg();
    await page.getByRole('button', { name: 'Switch to dark theme' }).click();
    const dark = await bg();
    assert(light !== dark, `the background changes (${light} -> ${dark})`);
    await page.reload();
    await composer(page).waitFor();
    assert((await bg()) === dark, 'the choice survives a reload');
    await page.getByRole('button', { name: 'Switch to light theme' }).click();
    await page.evaluate(() => localStorage.clear());
  });

  await test('phone 390x844: the sidebar hides behind a menu button', async () => {
    const page = await fresh(PHONE);
    await open(page, base, markdownHash);
    const menu = page.getByRole('button', { name: 'Conversations menu' });
    assert(await menu.isVisible(), 'the menu button is shown');
    assert(!(await nav(page).isVisible()), 'the sidebar is hidden');
    assert(await composer(page).isVisible(), 'the composer is shown');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `no horizontal scrolling (${overflow}px too wide)`);
    // With motion, as most users see it: the menu slides in, and focus must still land in it.
    await page.emulateMedia({ reducedMotion: 'no-preference' });
    await menu.click();
    await nav(page).waitFor({ state: 'visible' });
    assert((await menu.getAttribute('aria-expanded')) === 'true', 'the menu button says it is expanded');
    await page.waitForFunction(() => document.activeElement?.classList.contains('new-chat'), null, { timeout: 2000 });
    // "New chat" is the menu's first control: Shift+Tab from it must not reach the page behind.
    await page.keyboard.press('Shift+Tab');
    const behind = await page.evaluate(() => {
      const active = document.activeElement;
      return active && active !== document.body && !active.closest('#sidebar') ? active.outerHTML.slice(0, 80) : null;
    });
    assert(behind === null, `focus stays out of the page behind the open menu (${behind})`);
    const wrapped = await page.evaluate(() => document.activeElement?.closest('#sidebar') !== null && !document.activeElement?.classList.contains('new-chat'));
    assert(wrapped, 'Shift+Tab from the menu\'s first control goes round to its last');
    await page.emulateMedia({ reducedMotion: 'reduce' });
    // Turned sideways past the phone width, the menu closes rather than leaving the page inert.
    await page.setViewportSize(DESKTOP);
    await page.waitForFunction(() => !document.querySelector('main')?.inert);
    await composer(page).click();
    await page.setViewportSize(PHONE);
    assert(!(await nav(page).isVisible()), 'the menu is closed back on the phone width');
    await menu.click();
    await nav(page).waitFor({ state: 'visible' });
    await page.screenshot({ path: path.join(shotsDir, 'phone-menu-light.png') });
    // Escape closes it and gives focus back to the menu button, not to the page's top.
    await page.keyboard.press('Escape');
    await nav(page).waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.activeElement?.getAttribute('aria-label') === 'Conversations menu', null, { timeout: 2000 });
    // Escape in a rename inside the menu ends the edit only: the menu stays, focus on Rename.
    await menu.click();
    await nav(page).waitFor({ state: 'visible' });
    await nav(page).getByRole('button', { name: /^Rename / }).first().click();
    await nav(page).getByRole('textbox', { name: 'Conversation title' }).waitFor();
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => document.activeElement?.getAttribute('aria-label')?.startsWith('Rename '), null, { timeout: 2000 });
    await page.waitForTimeout(400);
    assert(await nav(page).isVisible(), 'the menu stays open after Escape ends a rename');
    await nav(page).locator('[aria-current="page"]').click();
    await nav(page).waitFor({ state: 'hidden' });
    await page.keyboard.press('Escape');
  });

  await test('accessibility: no WCAG 2.1 A/AA violations found by axe (contrast, labels, landmarks)', async () => {
    const problems = [];
    for (const [name, viewport, scheme, menuOpen] of [
      ['desktop light', DESKTOP, 'light', false],
      ['desktop dark', DESKTOP, 'dark', false],
      ['phone light', PHONE, 'light', false],
      ['phone dark, menu open', PHONE, 'dark', true],
    ]) {
      const page = await fresh(viewport);
      await page.emulateMedia({ colorScheme: scheme, reducedMotion: 'reduce' });
      await open(page, base, markdownHash);
      await log(page).locator('pre code').first().waitFor();
      if (menuOpen) {
        await page.getByRole('button', { name: 'Conversations menu' }).click();
        await nav(page).waitFor({ state: 'visible' });
      }
      await page.addScriptTag({ path: axePath });
      const violations = await page.evaluate(async () => {
        const result = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
        const checked = result.passes.map((p) => p.id);
        return {
          contrastChecked: checked.includes('color-contrast'),
          list: result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`),
        };
      });
      if (!violations.contrastChecked) problems.push(`${name}: axe did not get to check colour contrast`);
      for (const v of violations.list) problems.push(`${name}: ${v}`);
    }
    assert(problems.length === 0, `axe found:\n      ${problems.join('\n      ')}`);
  });

  await test('screenshots: desktop and phone, light and dark', async () => {
    for (const [name, viewport] of [
      ['desktop', DESKTOP],
      ['phone', PHONE],
    ]) {
      for (const scheme of ['light', 'dark']) {
        const page = await fresh(viewport);
        await page.emulateMedia({ colorScheme: scheme, reducedMotion: 'reduce' });
        await open(page, base, markdownHash);
        await log(page).locator('pre code').first().waitFor();
        await page.evaluate(() => {
          const el = document.querySelector('[role=log]');
          el.scrollTop = el.scrollHeight;
        });
        const file = path.join(shotsDir, `${name}-${scheme}.png`);
        await page.screenshot({ path: file });
      }
    }
  });

  // A second server whose replies take several seconds (150 ms a word, echoing the message), to
  // reload and switch conversations in the middle of one.
  let slowServer = null;
  const slow = () => (slowServer ??= startServer({ CHAT__ASSISTANT__DUMMY__MODE: 'deterministic', CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS: '150' }));
  // About 80 words, 12 s of reply: time for a reload or two switches on a loaded machine before it is stored.
  const count = 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty';
  const words = `${count}, ${count}, ${count}`;
  const streamingText = (page) =>
    page.evaluate(() => {
      const t = document.querySelector('article[data-state="streaming"] .message-body')?.textContent ?? '';
      return t.includes('Thinking') ? '' : t;
    });
  /** Waits until the streamed reply holds more than `min` characters (and is still streaming). */
  const replyLongerThan = (page, min) =>
    page.waitForFunction(
      (n) => {
        const t = document.querySelector('article[data-state="streaming"] .message-body')?.textContent ?? '';
        return !t.includes('Thinking') && t.length > n;
      },
      min,
      { timeout: 10_000 },
    );
  /** Waits for the stored reply, then checks the page shows exactly the stored exchange. */
  const expectStoredExchange = async (page, sbase, id, userText) => {
    await page.waitForFunction(
      () => document.querySelectorAll('[role=log] article[aria-label="Assistant"]:not([data-state])').length === 1 && !document.querySelector('[role=log] article[data-state]'),
      null,
      { timeout: 30_000 },
    );
    const stored = await (await fetch(`${sbase}/api/v1/conversations/${id}/messages`)).json();
    assert(stored.items.length === 2, `one exchange is stored (got ${stored.items.length} messages)`);
    assert(stored.items[0].content === userText, 'the stored user message is the one sent');
    const bodies = await log(page).locator('article .message-body').allInnerTexts();
    assert(bodies.length === 2, `the page shows the two messages once each (got ${bodies.length}: ${bodies.join(' | ')})`);
    assert(bodies[0].trim() === userText, `the user message is shown (${bodies[0]})`);
    assert(bodies[1].trim() === stored.items[1].content.trim(), `the complete stored reply is shown ("${bodies[1]}" vs "${stored.items[1].content}")`);
  };
  const createConversationVia = async (sbase, title) => {
    const res = await fetch(`${sbase}/api/v1/conversations`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ title }),
    });
    assert(res.status === 201, `creating a conversation answers 201 (got ${res.status})`);
    return (await res.json()).id;
  };

  await test('reload mid-reply continues the reply', async () => {
    const sbase = await slow();
    const id = await createConversationVia(sbase, 'Reload mid-reply');
    const text = `Please keep talking while I reload the page: ${words}.`;
    const page = await fresh();
    await open(page, sbase, `#/c/${id}`);
    await composer(page).fill(text);
    await composer(page).press('Enter');
    await page.getByRole('button', { name: 'Stop', exact: true }).waitFor();
    await replyLongerThan(page, 10);
    const before = (await streamingText(page)).length;
    await page.reload();
    await log(page).locator('article[aria-label="You"]').getByText('Please keep talking while I reload', { exact: false }).waitFor();
    await page.getByRole('button', { name: 'Stop', exact: true }).waitFor();
    // The user message comes from the `start` event: nothing of the exchange is stored yet.
    const midway = await (await fetch(`${sbase}/api/v1/conversations/${id}/messages`)).json();
    assert(midway.items.length === 0, `the exchange is not stored while the reply runs (got ${midway.items.length} messages)`);
    await replyLongerThan(page, before);
    const replayed = (await streamingText(page)).length;
    await replyLongerThan(page, replayed);
    assert((await log(page).locator('article[aria-label="You"]').count()) === 1, 'the user message is shown once');
    await expectStoredExchange(page, sbase, id, text);
    assert(!(await page.getByRole('button', { name: 'Stop', exact: true }).isVisible()), 'Stop is gone after the reply');
  });

  await test('a reply growing below a reader scrolled up brings the Jump to latest button', async () => {
    const sbase = await slow();
    const id = await createConversationVia(sbase, 'Growing below');
    const page = await fresh();
    await open(page, sbase, `#/c/${id}`);
    await composer(page).fill(['Grow below:', ...Array.from({ length: 24 }, (_, i) => `Line ${i}.`)].join('\n\n'));
    await composer(page).press('Enter');
    await replyLongerThan(page, 10);
    const jump = page.getByRole('button', { name: 'Jump to latest' });
    // 100 px up: not far enough for the button, far enough to stop following the bottom.
    await page.evaluate(() => {
      const logEl = document.querySelector('[role=log]');
      logEl.scrollTop = logEl.scrollHeight - logEl.clientHeight - 100;
      logEl.dispatchEvent(new Event('scroll'));
    });
    assert((await jump.count()) === 0, 'no button 100 px up');
    await jump.waitFor({ timeout: 15_000 });
    const left = await page.evaluate(() => {
      const logEl = document.querySelector('[role=log]');
      return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight;
    });
    assert(left > 200, `the view stayed where the reader left it while the reply grew (${left} px above the newest)`);
    // The button is not in the messages, but the wheel over it scrolls them as it does around it.
    const button = await jump.boundingBox();
    await page.mouse.move(button.x + button.width / 2, button.y + button.height / 2);
    const top = await page.evaluate(() => document.querySelector('[role=log]').scrollTop);
    await page.mouse.wheel(0, -200);
    await page.waitForFunction((before) => document.querySelector('[role=log]').scrollTop < before - 50, top, { timeout: 5_000 });
  });

  await test('a reply that grows by a whole code block or table at once keeps its newest words in view', async () => {
    const sbase = await slow();
    const id = await createConversationVia(sbase, 'Blocks at once');
    const page = await fresh();
    await open(page, sbase, `#/c/${id}`);
    // Each fence, table row and long word comes as one piece and adds more height in one render
    // (a code block's header and its first line) than a line of prose does.
    const text = [
      'Blocks at once:',
      '```js\nconst first = 1;\nconst second = 2;\n```',
      '| a | b |\n| --- | --- |\n| one | two |\n| three | four |',
      '```\nplain\nblock\n```',
      `https://example.com/${'a-long-path-'.repeat(12)}`,
      '```sh\necho done\n```',
      'The end.',
    ].join('\n\n');
    await composer(page).fill(text);
    await composer(page).press('Enter');
    await replyLongerThan(page, 10);
    await log(page).locator('article[aria-label="Assistant"]:not([data-state])').waitFor({ timeout: 30_000 });
    const left = await page.evaluate(() => {
      const logEl = document.querySelector('[role=log]');
      return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight;
    });
    const overflow = await page.evaluate(() => {
      const logEl = document.querySelector('[role=log]');
      return logEl.scrollHeight - logEl.clientHeight;
    });
    assert(overflow > 200, `the exchange is taller than the view (${overflow} px more)`);
    assert(left < 2, `the view followed the reply to its end (${left} px of it below the view)`);
    assert((await page.getByRole('button', { name: 'Jump to latest' }).count()) === 0, 'no Jump to latest button');
  });

  await test('switch away and back during a reply', async () => {
    const sbase = await slow();
    await createConversationVia(sbase, 'Switch target');
    const id = await createConversationVia(sbase, 'Switch source');
    const text = `Switch away and back while you answer: ${words}.`;
    const page = await fresh();
    await open(page, sbase, `#/c/${id}`);
    await composer(page).fill(text);
    await composer(page).press('Enter');
    await page.getByRole('button', { name: 'Stop', exact: true }).waitFor();
    await replyLongerThan(page, 10);
    await nav(page).getByRole('button', { name: 'Switch target', exact: true }).click();
    await log(page).getByText('No messages yet').waitFor();
    assert(!(await page.getByRole('button', { name: 'Stop', exact: true }).isVisible()), 'no Stop in the other conversation');
    await sleep(700);
    assert((await log(page).locator('article').count()) === 0, 'the reply does not show up in the other conversation');
    await nav(page).getByRole('button', { name: 'Switch source', exact: true }).click();
    await log(page).locator('article[aria-label="You"]').getByText('Switch away and back', { exact: false }).waitFor();
    await page.getByRole('button', { name: 'Stop', exact: true }).waitFor();
    const shown = (await streamingText(page)).length;
    await replyLongerThan(page, shown);
    await expectStoredExchange(page, sbase, id, text);
    await nav(page).getByRole('button', { name: 'Switch target', exact: true }).click();
    await log(page).getByText('No messages yet').waitFor();
  });

  await test('Stop ends the reply where it got to: that much is stored, and a message sent right after comes after it', async () => {
    const sbase = await slow();
    const page = await fresh();
    await open(page, sbase);
    await newChat(page);
    const text = `Please stop this reply: ${words}.`;
    await composer(page).fill(text);
    await composer(page).press('Enter');
    await replyLongerThan(page, 10);
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    // The whole reply takes seconds more: only the stop can have ended it this soon.
    await page.getByRole('button', { name: 'Send', exact: true }).waitFor({ timeout: 2000 });
    const id = new URL(page.url()).hash.replace('#/c/', '');
    await expectStoredExchange(page, sbase, id, text);
    const reply = log(page).locator('article[aria-label="Assistant"] .message-body');
    const cut = await reply.innerText();
    assert(!cut.includes('You said'), `the reply stopped before its end (${cut})`);
    await sleep(600);
    assert((await reply.innerText()) === cut, 'the stopped reply grows no more');

    // At once: the probe that found sends after a Stop stored before the stopped exchange.
    await composer(page).fill('And the next question');
    await composer(page).press('Enter');
    await page.waitForFunction(
      () => document.querySelectorAll('[role=log] article[aria-label="Assistant"]:not([data-state])').length === 2 && !document.querySelector('[role=log] article[data-state]'),
      null,
      { timeout: 30_000 },
    );
    await page.reload();
    await log(page).locator('article[aria-label="You"]').getByText('And the next question').waitFor();
    const users = await log(page).locator('article[aria-label="You"] .message-body').allInnerTexts();
    assert(users.length === 2 && users[0].trim() === text && users[1].trim() === 'And the next question', `the exchanges are in the order sent (${users.join(' | ')})`);
    assert((await log(page).locator('article[aria-label="Assistant"]').count()) === 2, 'each reply was stored once');
    assert((await reply.first().innerText()) === cut, 'the stored reply is what was shown');
  });

  /**
   * A model provider (OpenAI's API) that answers nothing: each request is held open, as by a model
   * slow to start, and marked `given up` when chat-server closes it first.
   */
  const silentProvider = async () => {
    const requests = [];
    const provider = createHttpServer((req, res) => {
      const request = { givenUp: false };
      requests.push(request);
      res.on('close', () => {
        request.givenUp = !res.writableEnded;
      });
      req.resume();
    });
    await new Promise((resolve) => provider.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      provider.closeAllConnections();
      provider.close();
    });
    return { url: `http://127.0.0.1:${provider.address().port}/v1`, requests };
  };
  const eventually = async (what, check, timeout = 10_000) => {
    const deadline = Date.now() + timeout;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await sleep(50);
    }
  };

  /** chat-server asking `provider` for its replies. */
  const startServerWith = (provider) =>
    startServer({
      CHAT__ASSISTANT__KIND: 'openai',
      CHAT__ASSISTANT__BASE_URL: provider.url,
      CHAT__ASSISTANT__MODEL: 'silent',
      CHAT__ASSISTANT__API_KEY: 'sk-e2e',
      CHAT__ASSISTANT__MAX_RETRIES: '0',
      CHAT__ASSISTANT__TIMEOUT_SECS: '60',
    });

  /** A new chat on chat-server whose model never answers, `text` sent there and "Thinking…". */
  const waitingForTheModel = async (text) => {
    const provider = await silentProvider();
    const sbase = await startServerWith(provider);
    const page = await fresh();
    await open(page, sbase);
    await newChat(page);
    await composer(page).fill(text);
    await composer(page).press('Enter');
    await eventually('the model is asked', () => provider.requests.length === 1);
    await log(page).getByText('Thinking', { exact: false }).waitFor();
    return { provider, sbase, page };
  };
  /** Stop ends the send that waits for the model: its text is back, and the model is asked no more. */
  const stopBeforeTheReply = async (page, provider, text) => {
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await stoppedBeforeTheReply(page, provider, text);
  };
  /** The send that waits for the model was stopped (here or elsewhere): `page`, which sent it, has its text back. */
  const stoppedBeforeTheReply = async (page, provider, text) => {
    // The model would keep it waiting for a minute: only the stop can have ended it this soon.
    await page.getByText('Stopped before the reply began. Nothing was stored. Your message is back in the message box.').waitFor({ timeout: 5000 });
    assert((await composer(page).inputValue()) === text, 'the message is back in the message box');
    await eventually('chat-server gives the model request up', () => provider.requests[0].givenUp, 5000);
    assert(provider.requests.length === 1, 'the model was asked once');
  };

  await test('Stop while the model has not answered: nothing is stored, the message is back, the model is asked no more', async () => {
    const { provider, sbase, page } = await waitingForTheModel('Never mind');
    await stopBeforeTheReply(page, provider, 'Never mind');
    const id = new URL(page.url()).hash.replace('#/c/', '');
    const stored = await (await fetch(`${sbase}/api/v1/conversations/${id}/messages`)).json();
    assert(stored.items.length === 0, `nothing is stored (${JSON.stringify(stored.items)})`);
  });

  await test('back in a chat whose message waits for the model: the message shows with Stop, which stops it', async () => {
    const { provider, page } = await waitingForTheModel('Still there?');
    const chat = new URL(page.url()).hash;
    await nav(page).getByRole('button', { name: 'New chat' }).first().click();
    await log(page).getByText('Start a new conversation').waitFor();
    await nav(page).getByRole('listitem').first().getByRole('button').first().click();
    await log(page).getByText('Still there?').waitFor();
    await log(page).getByText('Thinking', { exact: false }).waitFor();
    assert(new URL(page.url()).hash === chat, `back in the chat it was sent in (${page.url()})`);
    await stopBeforeTheReply(page, provider, 'Still there?');
  });

  await test('reloaded while the model has not answered: the message shows waiting, with Stop, which stops it', async () => {
    const { provider, page } = await waitingForTheModel('Anyone home?');
    await page.reload();
    await log(page).getByText('Anyone home?').waitFor();
    await log(page).getByText('Thinking', { exact: false }).waitFor();
    await stopBeforeTheReply(page, provider, 'Anyone home?');
  });

  await test('reloaded as its new chat is created: back in that chat, the message stored once and not offered again', async () => {
    const sbase = await slow();
    const page = await fresh();
    await open(page, sbase);
    await newChat(page);
    // The window is a round trip: the reload begins before the page learns the new chat's id and
    // changes its address, and the old page lives on until the next one arrives.
    let created;
    const createdOnServer = new Promise((resolve) => (created = resolve));
    let answerCreation;
    const creationAnswered = new Promise((resolve) => (answerCreation = resolve));
    await page.route(`${sbase}/api/v1/conversations`, async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      const response = await route.fetch();
      created(await response.json());
      await creationAnswered;
      await route.fulfill({ response }).catch(() => undefined);
    });
    await page.route(`${sbase}/`, async (route) => {
      await sleep(1500);
      await route.fallback();
    });
    const text = 'Sent as the page reloads';
    await composer(page).fill(text);
    await composer(page).press('Enter');
    const { id } = await createdOnServer;
    const reloading = page.reload();
    await sleep(300);
    answerCreation();
    await reloading;
    await page.unrouteAll();
    await log(page).locator('article[aria-label="You"]').getByText(text).waitFor({ timeout: 15_000 });
    assert(new URL(page.url()).hash === `#/c/${id}`, `the reloaded page shows the chat the send created (${page.url()})`);
    await expectStoredExchange(page, sbase, id, text);
    assert((await composer(page).inputValue()) === '', 'the message is not offered again');
    await nav(page).getByRole('button', { name: text, exact: true }).waitFor();
    await newChat(page);
    assert((await composer(page).inputValue()) === '', 'nor in the new chat\'s message box');
  });

  await test('a new chat whose creation got no answer: sent again, the message goes into the chat it made, no other', async () => {
    const page = await fresh();
    await open(page, base);
    await newChat(page);
    const since = new Date(Date.now() - 1000).toISOString();
    const madeSince = async () => (await (await fetch(`${base}/api/v1/conversations?limit=100`)).json()).items.filter((c) => c.created_at >= since);
    let made;
    await page.route(`${base}/api/v1/conversations`, async (route) => {
      if (route.request().method() !== 'POST' || made) return route.fallback();
      // The server makes the chat; its answer is lost on the way back.
      made = await (await route.fetch()).json();
      await route.abort('connectionreset');
    });
    const text = 'Made once, answered on the second try';
    await composer(page).fill(text);
    await composer(page).press('Enter');
    await page.getByRole('alert').getByText('Cannot reach the server', { exact: false }).waitFor();
    assert((await composer(page).inputValue()) === text, 'the text is back in the message box');
    await page.unrouteAll();
    await sendAndWait(page, text);
    assert(new URL(page.url()).hash === `#/c/${made.id}`, `the chat shown is the one the first try made (${page.url()}, ${made.id})`);
    await expectStoredExchange(page, base, made.id, text);
    const chats = (await madeSince()).map((c) => `${c.id} ${c.title}`);
    assert(chats.length === 1, `one chat made, not an empty one besides (${chats.join(', ')})`);
  });

  await test('another tab showing the chat shows a message waiting for the model, and can stop it', async () => {
    const provider = await silentProvider();
    const sbase = await startServerWith(provider);
    const created = await fetch(`${sbase}/api/v1/conversations`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ title: 'Watched from two tabs' }),
    });
    const { id } = await created.json();
    const page = await fresh();
    await open(page, sbase, `#/c/${id}`);
    const other = watch(await context.newPage());
    await other.setViewportSize(DESKTOP);
    await open(other, sbase, `#/c/${id}`);
    await composer(page).fill('Seen from the other tab?');
    await composer(page).press('Enter');
    await log(other).getByText('Seen from the other tab?').waitFor();
    await log(other).getByText('Thinking', { exact: false }).waitFor();
    await other.getByRole('button', { name: 'Stop', exact: true }).click();
    await stoppedBeforeTheReply(page, provider, 'Seen from the other tab?');
    await log(other).getByText('Seen from the other tab?').waitFor({ state: 'detached' });
    await other.close();
  });

  await test('two tabs: what one stores and names shows in the other without a reload', async () => {
    const page = await fresh();
    await open(page, base, markdownHash);
    const other = watch(await context.newPage());
    await other.setViewportSize(DESKTOP);
    await open(other, base, markdownHash);
    await newChat(page);
    await sendAndWait(page, 'Begun in the first tab');
    await nav(other).getByRole('button', { name: 'Begun in the first tab', exact: true }).click();
    await log(other).getByText('Begun in the first tab').waitFor();
    await sendAndWait(page, 'Said in the first tab');
    await log(other).getByText('Said in the first tab').waitFor();
    await other.close();
  });

  // Last, because it stops the server.
  await test('server gone: a send keeps the text, loading offers Retry', async () => {
    const page = await fresh();
    await open(page, base, markdownHash);
    await stopServer();
    await composer(page).fill('Words that must not be lost');
    await composer(page).press('Enter');
    const alert = page.locator('.send-error');
    await alert.waitFor();
    assert((await alert.innerText()).includes('Cannot reach the server'), `the error says the server is unreachable (${await alert.innerText()})`);
    assert((await composer(page).inputValue()) === 'Words that must not be lost', 'the typed text is back in the composer');
    await nav(page).locator('li:not(:has([aria-current]))').first().getByRole('button').first().click();
    await log(page).getByText('Cannot reach the server.').waitFor();
    await log(page).getByRole('button', { name: 'Retry' }).waitFor();
    await page.screenshot({ path: path.join(shotsDir, 'desktop-unreachable-light.png') });
  });
}

let fatal = null;
try {
  await main();
} catch (err) {
  fatal = err;
  console.log(`e2e: setup failed: ${err?.stack ?? err}`);
} finally {
  for (const fn of cleanups) {
    try {
      await fn();
    } catch {
      // best effort
    }
  }
  for (const proc of serverProcs) await stopServer(proc);
  // Only once the servers are gone: a database removed under a running server fails its next sync,
  // which it logs as an error, and that log is what a failed run prints.
  for (const dir of serverDirs) rmSync(dir, { recursive: true, force: true });
}

const failed = results.filter((r) => !r.ok).length + (fatal ? 1 : 0);
const passed = results.filter((r) => r.ok).length;
if (failed > 0 && serverLog.length > 0) {
  console.log('--- last chat-server output ---');
  console.log(serverLog.join('').split('\n').slice(-40).join('\n'));
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
// A filter that matches nothing tested nothing: not a pass.
process.exit(failed > 0 || results.length === 0 ? 1 : 0);
