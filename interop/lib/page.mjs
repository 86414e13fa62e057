// Shared by the tests that drive the web page in Debian's headless Chromium
// (playwright-core, which downloads nothing): the browser's flags, opening a
// page, and reading a page's SIP trace.
import assert from "node:assert/strict";
import fs from "node:fs";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const T = 15000; // bound of every wait on a page

// launch starts Chromium with fake audio devices, ICE on loopback allowed.
export function launch() {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      // ICE candidates on 127.0.0.1 too: the test may run in a network
      // namespace that has nothing but loopback.
      "--allow-loopback-in-peer-connection",
    ],
  });
}

// openPage opens url in a new context of browser; page errors and console
// errors go to errors, named.
export async function openPage(browser, url, name, errors) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.on("pageerror", (err) => errors.push(`${name}: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`${name} console: ${msg.text()}`);
  });
  await page.goto(url, { timeout: T });
  return page;
}

// trace returns a page's SIP trace: [{dir, first, method}], oldest first.
export function trace(page) {
  return page.$$eval("#sip-trace li", (lis) => lis.map((li) => ({ dir: li.dataset.dir, first: li.dataset.first, method: li.dataset.method })));
}

// assertSequence checks that the trace holds the steps in this order (other
// messages may come between them), each step "dir first-line-prefix method".
export function assertSequence(tr, steps, who) {
  let i = 0;
  for (const [dir, prefix, method] of steps) {
    while (i < tr.length && !(tr[i].dir === dir && tr[i].first.startsWith(prefix) && tr[i].method === method)) i++;
    assert.ok(i < tr.length, `${who}: ${dir} "${prefix}" (${method}) not found in order in the SIP trace:\n` +
      tr.map((t) => `  ${t.dir} ${t.first} [${t.method}]`).join("\n"));
    i++;
  }
}

export async function callState(page) {
  return page.$eval("#call-state", (e) => e.dataset.state);
}

