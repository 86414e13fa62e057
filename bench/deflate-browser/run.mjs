// bench/deflate-browser: bytes on the wire of the web phone's JsSIP page in
// headless Chromium, with and without permessage-deflate (issue 16's
// "captured from a real Chromium session").
//
// Two pages (alice and bob) do what interop/browser.test.mjs's twoPhones()
// does: REGISTER, MESSAGE both ways, a call (INVITE, 180, 200, ACK, media
// connected on loopback), BYE, 200. Each page is loaded through its own
// counting TCP relay on 127.0.0.1 (node:net) in front of examples/webphone,
// so its WebSocket goes through the relay too (the page builds its URL from
// location.host; Host and Origin are then both the relay's, which the web
// phone's same-origin check accepts). The relay counts the TCP payload of
// the page's WebSocket connection in both directions: the handshake
// (request and 101) apart, then every byte after the 101, and it parses the
// frame headers to count frames, text messages and those sent with RSV1
// (compressed). The counters are read once both pages have the BYE's 200,
// before the pages close.
//
// A measurement, not a test: it prints a table (the median of ROUNDS runs of
// each mode, server defaults then -compression, interleaved), and the runs'
// figures as JSON lines on stderr. Run from the repository's root:
//
//   npm ci --prefix interop --no-audit --no-fund
//   npm ci --prefix examples/webphone/web --no-audit --no-fund
//   go build -o /tmp/webphone ./examples/webphone
//   WEBPHONE_BIN=/tmp/webphone node bench/deflate-browser/run.mjs
//
// Environment: WEBPHONE_BIN (else built once), ROUNDS (3), CHROMIUM
// (/usr/bin/chromium).
import net from "node:net";
import { createRequire } from "node:module";
import { T, launch, trace, assertSequence } from "../../interop/lib/page.mjs";

const require = createRequire(import.meta.url);
const { start, online } = require("../../interop/lib/server.js");

const ROUNDS = Number(process.env.ROUNDS || 3);
const MODES = [
  { name: "off", args: [] },
  { name: "on", args: ["-compression"] },
];

// FrameCounter parses a WebSocket byte stream's frame headers (RFC 6455
// §5.2), skipping payloads: frames, data messages (text/binary first
// frames), those with RSV1, control frames.
class FrameCounter {
  constructor() {
    this.buf = Buffer.alloc(0);
    this.skip = 0; // payload bytes of the current frame still to come
    this.frames = 0;
    this.messages = 0;
    this.compressed = 0;
    this.control = 0;
    this.sizes = []; // payload length of each data message's first frame
  }
  push(chunk) {
    if (this.skip >= chunk.length) {
      this.skip -= chunk.length;
      return;
    }
    this.buf = Buffer.concat([this.buf, chunk.subarray(this.skip)]);
    this.skip = 0;
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let h = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        h = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        h = 10;
      }
      if (masked) h += 4;
      if (b.length < h) return;
      const op = b[0] & 0x0f;
      this.frames++;
      if (op === 1 || op === 2) {
        this.messages++;
        this.sizes.push(len);
        if (b[0] & 0x40) this.compressed++;
      } else if (op >= 8) this.control++;
      if (b.length >= h + len) {
        this.buf = b.subarray(h + len);
      } else {
        this.skip = h + len - b.length;
        this.buf = Buffer.alloc(0);
        return;
      }
    }
  }
}

// relay listens on a free 127.0.0.1 port and carries each connection to
// 127.0.0.1:target. Connections whose first request is a WebSocket upgrade
// are counted in ws (one entry each); the others (the page, its scripts,
// /api/config) in http.
async function relay(target) {
  const ws = [];
  const http = { conns: 0, up: 0, down: 0 };
  const socks = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    socks.add(client);
    socks.add(upstream);
    let kind = ""; // "", "ws" or "http", from the first request head
    let head = Buffer.alloc(0);
    let c; // the counters of this WebSocket connection
    let respHead = Buffer.alloc(0);
    let upgraded = false; // the 101's head has been seen whole
    const pending = []; // server bytes that came before the kind was known
    const down = (d) => {
      if (kind === "http") {
        http.down += d.length;
        return;
      }
      if (upgraded) {
        c.down += d.length;
        c.downFrames.push(d);
        return;
      }
      respHead = Buffer.concat([respHead, d]);
      const i = respHead.indexOf("\r\n\r\n");
      if (i < 0) return;
      c.hsDown = i + 4;
      c.status = respHead.subarray(0, respHead.indexOf("\r\n")).toString();
      const ext = /^sec-websocket-extensions:\s*(.*)$/im.exec(respHead.subarray(0, i).toString());
      c.extensions = ext ? ext[1].trim() : "";
      upgraded = true;
      const rest = respHead.subarray(i + 4);
      if (rest.length) down(rest);
    };
    client.on("data", (d) => {
      if (kind === "") {
        head = Buffer.concat([head, d]);
        const i = head.indexOf("\r\n\r\n");
        if (i < 0) {
          upstream.write(d);
          return;
        }
        const req = head.subarray(0, i).toString();
        if (/^upgrade:\s*websocket\s*$/im.test(req)) {
          kind = "ws";
          c = { hsUp: i + 4, hsDown: 0, up: head.length - (i + 4), down: 0, upFrames: new FrameCounter(), downFrames: new FrameCounter(), request: req.split("\r\n")[0] };
          const off = /^sec-websocket-extensions:\s*(.*)$/im.exec(req);
          c.offered = off ? off[1].trim() : "";
          c.upFrames.push(head.subarray(i + 4));
          ws.push(c);
        } else {
          kind = "http";
          http.conns++;
          http.up += head.length;
        }
        upstream.write(d);
        for (const p of pending.splice(0)) down(p);
        return;
      }
      if (kind === "ws") {
        c.up += d.length;
        c.upFrames.push(d);
      } else http.up += d.length;
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (kind === "") pending.push(d);
      else down(d);
      client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      socks.delete(client);
      socks.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("end", () => (s === client ? upstream : client).end());
      s.on("error", end);
      s.on("close", end);
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    ws,
    http,
    close() {
      for (const s of socks) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

function check(ok, what) {
  if (!ok) throw new Error(what);
}

// sipBytes sums the UTF-8 length of the SIP messages in a page's trace, per
// direction (the page keeps each message's text in its trace line's title).
function sipBytes(page) {
  return page.$$eval("#sip-trace li", (lis) => {
    const out = { out: 0, in: 0, nOut: 0, nIn: 0 };
    const enc = new TextEncoder();
    for (const li of lis) {
      out[li.dataset.dir] += enc.encode(li.title).length;
      out[li.dataset.dir === "out" ? "nOut" : "nIn"]++;
    }
    return out;
  });
}

// once runs the flow against a fresh web phone started with args and
// returns, per page, the relay's counters and the page's SIP bytes.
async function once(mode) {
  const errors = [];
  const srv = await start({ args: mode.args });
  const relays = {};
  let browser;
  try {
    browser = await launch();
    const pages = {};
    for (const name of ["alice", "bob"]) {
      relays[name] = await relay(srv.port);
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await ctx.newPage();
      page.on("pageerror", (err) => errors.push(`${name}: ${err.message}`));
      page.on("console", (msg) => {
        if (msg.type() === "error") errors.push(`${name} console: ${msg.text()}`);
      });
      await page.goto(relays[name].url, { timeout: T });
      pages[name] = page;
    }
    const { alice, bob } = pages;

    // REGISTER.
    for (const [page, name] of [[alice, "alice"], [bob, "bob"]]) {
      await page.fill("#name", name);
      await page.click("#register");
      await page.waitForSelector('body[data-reg="registered"][data-ws="connected"]', { timeout: T });
    }
    const on = await online(srv);
    check(on.alice === 1 && on.bob === 1, `online: ${JSON.stringify(on)}`);
    await alice.waitForSelector('#online li[data-user="bob"] button.call:not([disabled])', { timeout: T });
    await bob.waitForSelector('#online li[data-user="alice"] button.call:not([disabled])', { timeout: T });

    // MESSAGE both ways.
    const say = async (from, to, toName, fromName, text) => {
      await from.fill("#chat-to", toName);
      await from.fill("#chat-text", text);
      await from.click("#chat-send");
      await to.locator(`#chat-log li[data-dir="in"][data-peer="${fromName}"] .text`, { hasText: text }).waitFor({ timeout: T });
      await from.waitForSelector(`#chat-log li[data-dir="out"][data-peer="${toName}"][data-status="delivered"]`, { timeout: T });
    };
    await say(alice, bob, "bob", "alice", "Hi Bob! Grüße aus Köln — ça va? ✓");
    await say(bob, alice, "alice", "bob", "Hello Alice, ready for a call?");

    // The call: INVITE → 180 → 200 → ACK, media connected, BYE → 200.
    await alice.click('#online li[data-user="bob"] button.call');
    await bob.waitForSelector('#call-state[data-state="incoming"]', { timeout: T });
    await alice.waitForSelector('#call-state[data-state="ringing"]', { timeout: T });
    await bob.click("#answer");
    await alice.waitForSelector('#call-state[data-state="established"]', { timeout: T });
    await bob.waitForSelector('#call-state[data-state="established"]', { timeout: T });
    for (const page of [alice, bob]) {
      await page.waitForFunction(() => window.webphone.session?.connection?.connectionState === "connected", null, { timeout: T });
    }
    await alice.click("#hangup");
    await alice.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
    await bob.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
    assertSequence(await trace(alice), [
      ["out", "REGISTER ", "REGISTER"], ["in", "SIP/2.0 200", "REGISTER"],
      ["out", "INVITE sip:bob@sipws.test ", "INVITE"], ["in", "SIP/2.0 180", "INVITE"], ["in", "SIP/2.0 200", "INVITE"], ["out", "ACK ", "ACK"],
      ["out", "BYE ", "BYE"], ["in", "SIP/2.0 200", "BYE"],
    ], "alice");
    assertSequence(await trace(bob), [
      ["out", "REGISTER ", "REGISTER"], ["in", "SIP/2.0 200", "REGISTER"],
      ["in", "INVITE ", "INVITE"], ["out", "SIP/2.0 180", "INVITE"], ["out", "SIP/2.0 200", "INVITE"], ["in", "ACK ", "ACK"],
      ["in", "BYE ", "BYE"], ["out", "SIP/2.0 200", "BYE"],
    ], "bob");
    // The 200 to the BYE was read by alice's page: it crossed the relay.
    // Bob's 200 was written by bob's page before alice had it: it crossed
    // bob's relay too. Let the last bytes settle, then read the counters.
    await new Promise((r) => setTimeout(r, 300));

    const out = { mode: mode.name, pages: {} };
    for (const [name, page] of Object.entries(pages)) {
      const r = relays[name];
      check(r.ws.length === 1, `${name}: ${r.ws.length} WebSocket connections through the relay`);
      const c = r.ws[0];
      check(c.status.startsWith("HTTP/1.1 101"), `${name}: ${c.status}`);
      const want = mode.args.includes("-compression") ? "permessage-deflate; client_no_context_takeover" : "";
      check(c.extensions === want, `${name}: Sec-WebSocket-Extensions "${c.extensions}", want "${want}"`);
      const sip = await sipBytes(page);
      check(c.upFrames.messages === sip.nOut && c.downFrames.messages === sip.nIn,
        `${name}: ${c.upFrames.messages}/${c.downFrames.messages} messages on the wire, ${sip.nOut}/${sip.nIn} in the trace`);
      out.pages[name] = {
        request: c.request, offered: c.offered, extensions: c.extensions,
        hsUp: c.hsUp, hsDown: c.hsDown, up: c.up, down: c.down,
        msgsUp: c.upFrames.messages, msgsDown: c.downFrames.messages,
        rsv1Up: c.upFrames.compressed, rsv1Down: c.downFrames.compressed,
        controlUp: c.upFrames.control, controlDown: c.downFrames.control,
        sizesUp: c.upFrames.sizes, sizesDown: c.downFrames.sizes,
        sipUp: sip.out, sipDown: sip.in,
        http: { ...r.http },
      };
    }
    check(errors.length === 0, `errors on the pages: ${errors.join("; ")}`);
    return out;
  } finally {
    if (browser) await browser.close();
    for (const r of Object.values(relays)) await r.close();
    await srv.stop();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const runs = { off: [], on: [] };
for (let i = 0; i < ROUNDS; i++) {
  for (const mode of MODES) {
    const r = await once(mode);
    r.round = i + 1;
    process.stderr.write(JSON.stringify(r) + "\n");
    runs[mode.name].push(r);
  }
}

// The table: medians over the rounds, per page and for both pages.
const fields = (p) => ({
  msgsUp: p.msgsUp, msgsDown: p.msgsDown, sipUp: p.sipUp, sipDown: p.sipDown,
  hsUp: p.hsUp, hsDown: p.hsDown, up: p.up, down: p.down, total: p.up + p.down, all: p.hsUp + p.hsDown + p.up + p.down, rsv1Up: p.rsv1Up, rsv1Down: p.rsv1Down,
});
const sum = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] + b[k]]));
const row = (mode, who) => {
  const per = runs[mode].map((r) => (who === "both" ? sum(fields(r.pages.alice), fields(r.pages.bob)) : fields(r.pages[who])))
    .map((p) => ({ ...p, wireSipUp: p.up / p.sipUp, wireSipDown: p.down / p.sipDown })); // each run's own ratio
  return Object.fromEntries(Object.keys(per[0]).map((k) => [k, median(per.map((p) => p[k]))]));
};
const n = (x) => Math.round(x).toLocaleString("en-US");
const pct = (a, b) => `${((100 * a) / b).toFixed(1)} %`;

const first = runs.on[0].pages.alice;
console.log(`web phone (JsSIP) in headless Chromium, ${ROUNDS} runs per mode, medians; bytes of TCP payload on each page's WebSocket`);
console.log(`Chromium offered: ${first.offered}`);
console.log(`-compression answered: ${first.extensions}\n`);
console.log("| page | mode | messages up / down | SIP bytes up / down | handshake up / down | after the 101 up | after the 101 down | total after the 101 | total with the handshake | wire ÷ SIP bytes up / down | compressed (RSV1) up / down |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const who of ["alice", "bob", "both"]) {
  const off = row("off", who);
  for (const mode of ["off", "on"]) {
    const r = row(mode, who);
    const ratio = (k) => (mode === "on" ? ` (${pct(r[k], off[k])})` : "");
    console.log(`| ${who} | ${mode} | ${r.msgsUp} / ${r.msgsDown} | ${n(r.sipUp)} / ${n(r.sipDown)} | ${n(r.hsUp)} / ${n(r.hsDown)} | ` +
      `${n(r.up)}${ratio("up")} | ${n(r.down)}${ratio("down")} | ${n(r.total)}${ratio("total")} | ${n(r.all)}${ratio("all")} | ${pct(r.wireSipUp, 1)} / ${pct(r.wireSipDown, 1)} | ${r.rsv1Up} / ${r.rsv1Down} |`);
  }
}
