// The web page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core, which downloads nothing): two pages register as alice and
// bob, chat, and call each other with audio from Chromium's fake devices.
// What each page sent and received is read from its SIP trace, the list of
// every message its WebSocket carried; the call's media from JsSIP's
// RTCPeerConnection.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import { CHROMIUM, T, launch, trace, assertSequence, callState } from "./lib/page.mjs";

const require = createRequire(import.meta.url);
const { start, online, getJSON, adminJSON, repo, serverCertificate, EXAMPLES } = require("./lib/server.js");

// The call's screenshot is written only when asked for, so that a test run
// leaves the work tree as it was: WEBPHONE_SCREENSHOT=docs/webphone.png
// renews the README's picture.
const SCREENSHOT = process.env.WEBPHONE_SCREENSHOT ? path.resolve(repo, process.env.WEBPHONE_SCREENSHOT) : "";

// twoPhones runs the two pages against an example (the web phone by default)
// started with args and env,
// whose WebSockets must be carried by http ("HTTP/1.1", or "HTTP/2" for
// RFC 8441's Extended CONNECT on the connection that loaded the page).
function twoPhones(title, { example = "webphone", args = [], env = {}, http = "HTTP/1.1" } = {}) {
  describe(title, { timeout: 120000 }, () => {
    let srv, browser, alice, bob;
    const errors = [];
    const extensions = []; // what the server answered in Sec-WebSocket-Extensions, per page

    before(async () => {
      srv = await start({ example, args, env });
      if (srv.url.startsWith("https:")) srv.ca = await serverCertificate(srv.port); // for getJSON
      browser = await launch();
      const open = async (name) => {
        // The certificate of -self-signed is made at start: the pages
        // accept it (the Node side checks it: srv.ca).
        const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true });
        const page = await ctx.newPage();
        // The extensions the server answered on the page's WebSockets.
        const cdp = await ctx.newCDPSession(page);
        await cdp.send("Network.enable");
        cdp.on("Network.webSocketHandshakeResponseReceived", (e) => {
          const h = Object.entries(e.response.headers).find(([k]) => k.toLowerCase() === "sec-websocket-extensions");
          extensions.push(`${name}: ${h ? h[1] : ""}`);
        });
        page.on("pageerror", (err) => errors.push(`${name}: ${err.message}`));
        page.on("console", (msg) => {
          if (msg.type() === "error") errors.push(`${name} console: ${msg.text()}`);
        });
        await page.goto(srv.url, { timeout: T });
        assert.equal(await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol),
          http === "HTTP/2" ? "h2" : "http/1.1", `${name}: the page's protocol`);
        return page;
      };
      alice = await open("alice");
      bob = await open("bob");
    });

    after(async () => {
      if (browser) await browser.close();
      if (srv) await srv.stop();
    });

    test("both pages register; the server has them online", async () => {
      for (const [page, name] of [[alice, "alice"], [bob, "bob"]]) {
        await page.fill("#name", name);
        await page.click("#register");
        await page.waitForSelector('body[data-reg="registered"][data-ws="connected"]', { timeout: T });
        assert.equal(await page.textContent("#reg-status"), `registered as ${name}`);
      }
      assert.deepEqual(await online(srv), { alice: 1, bob: 1 });
      // And each page lists the other as online, with a Call button.
      await alice.waitForSelector('#online li[data-user="bob"] button.call:not([disabled])', { timeout: T });
      await bob.waitForSelector('#online li[data-user="alice"] button.call:not([disabled])', { timeout: T });
      const bindings = await adminJSON(srv, "/api/bindings");
      for (const b of bindings.bindings) assert.equal(b.outbound, true, `${b.user} registered with Outbound (JsSIP's reg-id)`);
      // The public list has the names only.
      assert.deepEqual((await getJSON(srv, "/api/online")).users, ["alice", "bob"]);
    });

    test("MESSAGE between the pages, both ways", async () => {
      const say = async (from, to, toName, fromName, text) => {
        await from.fill("#chat-to", toName);
        await from.fill("#chat-text", text);
        await from.click("#chat-send");
        const got = to.locator(`#chat-log li[data-dir="in"][data-peer="${fromName}"] .text`, { hasText: text });
        await got.waitFor({ timeout: T });
        assert.equal(await got.count(), 1, "delivered exactly once");
        assert.equal(await got.textContent(), text);
        await from.waitForSelector(`#chat-log li[data-dir="out"][data-peer="${toName}"][data-status="delivered"]`, { timeout: T });
      };
      await say(alice, bob, "bob", "alice", "Hi Bob! Grüße aus Köln — ça va? ✓");
      await say(bob, alice, "alice", "bob", "Hello Alice, ready for a call?");
    });

    test("the operator sees both connections on the -admin listener, the public one does not", async () => {
      const conns = await adminJSON(srv, "/api/connections");
      assert.equal(conns.total, 2);
      for (const c of conns.connections) assert.equal(c.http, http, `connection ${c.id} carried by ${http}`);
      const opened = srv.logs.filter((l) => l.includes("connection opened"));
      assert.equal(opened.length, 2, "two connections opened:\n" + srv.logs.join("\n"));
      for (const l of opened) assert.match(l, new RegExp(`proto=${http}\\b`), "the server's log says what carried it");
      await assert.rejects(getJSON(srv, "/api/connections"), /404/);
      for (const page of [alice, bob]) assert.equal(await page.isVisible("#open-mode"), true, "open mode is said on the page");
    });

    test("alice calls bob: INVITE → 180 → 200 → ACK on both sides, the call holds, alice hangs up", async () => {
      await alice.click('#online li[data-user="bob"] button.call');
      await bob.waitForSelector('#call-state[data-state="incoming"]', { timeout: T });
      await alice.waitForSelector('#call-state[data-state="ringing"]', { timeout: T });
      await bob.click("#answer");
      await alice.waitForSelector('#call-state[data-state="established"]', { timeout: T });
      await bob.waitForSelector('#call-state[data-state="established"]', { timeout: T });

      assertSequence(await trace(alice), [
        ["out", "INVITE sip:bob@sipws.test ", "INVITE"],
        ["in", "SIP/2.0 180", "INVITE"],
        ["in", "SIP/2.0 200", "INVITE"],
        ["out", "ACK ", "ACK"],
      ], "alice");
      assertSequence(await trace(bob), [
        ["in", "INVITE ", "INVITE"],
        ["out", "SIP/2.0 180", "INVITE"],
        ["out", "SIP/2.0 200", "INVITE"],
        ["in", "ACK ", "ACK"],
      ], "bob");

      // Media: each side's RTCPeerConnection connects (ICE on loopback) and
      // plays the other's audio track.
      for (const [page, who] of [[alice, "alice"], [bob, "bob"]]) {
        await page.waitForFunction(() => window.webphone.session?.connection?.connectionState === "connected", null, { timeout: T })
          .catch(async () => assert.fail(`${who}: RTCPeerConnection is ${await page.evaluate(() => window.webphone.session?.connection?.connectionState)}`));
        const tracks = await page.evaluate(() => {
          const s = document.querySelector("#remote-audio").srcObject;
          return s ? s.getAudioTracks().map((t) => t.readyState) : [];
        });
        assert.deepEqual(tracks, ["live"], `${who}: remote audio`);
      }

      // The call holds.
      await new Promise((r) => setTimeout(r, 4000));
      for (const [page, who] of [[alice, "alice"], [bob, "bob"]]) {
        assert.equal(await callState(page), "established", `${who} after 4 s`);
        assert.equal(await page.evaluate(() => window.webphone.session.isEstablished()), true, `${who}: JsSIP session established`);
        assert.equal(await page.evaluate(() => window.webphone.session.connection.connectionState), "connected", `${who}: media after 4 s`);
      }

      // The README's picture: alice's page during the call.
      const png = await alice.screenshot({ fullPage: true });
      assert.ok(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), "a PNG screenshot");
      if (SCREENSHOT && example === "webphone" && http === "HTTP/1.1") {
        fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
        fs.writeFileSync(SCREENSHOT, png);
      }

      await alice.click("#hangup");
      await alice.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
      await bob.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
      assert.match(await bob.textContent("#call-peer"), /Terminated|BYE/i);
      assertSequence(await trace(alice), [["out", "BYE ", "BYE"], ["in", "SIP/2.0 200", "BYE"]], "alice");
      assertSequence(await trace(bob), [["in", "BYE ", "BYE"], ["out", "SIP/2.0 200", "BYE"]], "bob");
    });

    test("alice cancels a ringing call: CANCEL reaches bob, alice gets 487", async () => {
      await alice.click('#online li[data-user="bob"] button.call');
      await bob.waitForSelector('#call-state[data-state="incoming"]', { timeout: T });
      await alice.waitForSelector('#call-state[data-state="ringing"]', { timeout: T });
      await alice.click("#hangup");
      await alice.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
      await bob.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
      const a = await trace(alice);
      const lastInvite = a.findLastIndex((t) => t.dir === "out" && t.first.startsWith("INVITE "));
      assertSequence(a.slice(lastInvite), [
        ["out", "INVITE ", "INVITE"],
        ["in", "SIP/2.0 180", "INVITE"],
        ["out", "CANCEL ", "CANCEL"],
        ["in", "SIP/2.0 200", "CANCEL"],
        ["in", "SIP/2.0 487", "INVITE"],
      ], "alice");
      const b = await trace(bob);
      const lastIn = b.findLastIndex((t) => t.dir === "in" && t.first.startsWith("INVITE "));
      assertSequence(b.slice(lastIn), [["in", "INVITE ", "INVITE"], ["in", "CANCEL ", "CANCEL"], ["out", "SIP/2.0 487", "INVITE"]], "bob");
    });

    test("sign out: both un-REGISTER", async () => {
      for (const page of [alice, bob]) {
        await page.click("#unregister");
        await page.waitForSelector('body[data-reg="unregistered"]', { timeout: T });
      }
      const deadline = Date.now() + T;
      while (Object.keys(await online(srv)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(await online(srv), {});
    });

    if (http === "HTTP/1.1") {
      test("permessage-deflate negotiated on the pages' WebSockets only with -compression", () => {
        const want = args.includes("-compression") ? "permessage-deflate; client_no_context_takeover" : "";
        assert.ok(extensions.length >= 2, `one WebSocket per page at least: ${extensions}`);
        for (const e of extensions) assert.equal(e.slice(e.indexOf(": ") + 2), want, e);
      });
    }

    test("no errors on the pages", () => {
      assert.deepEqual(errors, []);
    });
  });
}

for (const example of EXAMPLES) twoPhones(`${example}: web page in headless Chromium`, { example });
// The web phone's session again with -compression (Config.Compression): the
// permessage-deflate that Chromium offers on every WebSocket is negotiated,
// and every message crosses compressed.
twoPhones("webphone: web page in headless Chromium (-compression)", { args: ["-compression"] });
// WebSocket over HTTP/2: the page loads over h2 and Chromium sends the
// handshake as an Extended CONNECT on that connection (RFC 8441), which the
// server offers with -http2 and GODEBUG=http2xconnect=1.
twoPhones("web page in headless Chromium over HTTP/2 (RFC 8441)", {
  args: ["-self-signed", "-http2"],
  env: { GODEBUG: "http2xconnect=1" },
  http: "HTTP/2",
});

// With a users file: the page shows a password field (and no open-mode
// notice); JsSIP answers the server's challenge with the password typed in;
// a wrong password fails the registration; registered pages chat.
describe("web page with passwords (-users)", { timeout: 90000 }, () => {
  let srv, browser;
  const pages = [];

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium)`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "webphone-users-"));
    const file = path.join(dir, "users");
    fs.writeFileSync(file, "alice:alice-pw\nbob:bob-pw\n");
    srv = await start({ args: ["-users", file] });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic"] });
  });

  after(async () => {
    if (browser) await browser.close();
    if (srv) await srv.stop();
  });

  const open = async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(srv.url, { timeout: T });
    await page.waitForSelector("#password:not([hidden])", { timeout: T });
    pages.push(page);
    return page;
  };
  const signIn = async (page, name, password) => {
    await page.fill("#name", name);
    await page.fill("#password", password);
    await page.click("#register");
  };

  test("a wrong password fails, the right one registers; the pages chat", async () => {
    const mallory = await open();
    assert.equal(await mallory.isVisible("#open-mode"), false, "no open-mode notice with users");
    await signIn(mallory, "alice", "guess");
    await mallory.waitForSelector('body[data-reg="failed"]', { timeout: T });
    assert.match(await mallory.textContent("#reg-status"), /401|Authentication/);
    assert.deepEqual(await online(srv), {});

    const alice = await open();
    const bob = await open();
    await signIn(alice, "alice", "alice-pw");
    await signIn(bob, "bob", "bob-pw");
    for (const page of [alice, bob]) await page.waitForSelector('body[data-reg="registered"]', { timeout: T });
    assert.deepEqual(await online(srv), { alice: 1, bob: 1 });

    await alice.fill("#chat-to", "bob");
    await alice.fill("#chat-text", "authenticated chat");
    await alice.click("#chat-send");
    await bob.locator('#chat-log li[data-dir="in"][data-peer="alice"] .text', { hasText: "authenticated chat" }).waitFor({ timeout: T });
    await alice.waitForSelector('#chat-log li[data-dir="out"][data-status="delivered"]', { timeout: T });
  });
});
