// JsSIP and SIP.js in Node against each example (the web phone, sipgoproxy):
// registration seen from the
// server's side, MESSAGE both ways delivered byte-exact and exactly once,
// OPTIONS answered by the server, and reconnection after a restart.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { JsSIPPhone, SipJsPhone, installWebSocket, closes } from "./lib/clients.mjs";

const require = createRequire(import.meta.url);
const { start, freePort, online, waitFor, EXAMPLES } = require("./lib/server.js");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

installWebSocket();

// The bodies: ASCII, multi-byte UTF-8 (2-, 3- and 4-byte sequences) and
// 20 KB of lines with some UTF-8 in them.
function bigBody() {
  const line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ ä€𝄞\n";
  let s = "";
  for (let i = 0; s.length < 20480; i++) s += `${String(i).padStart(4, "0")} ${line}`;
  return s;
}
const BODIES = {
  ascii: "Hello, this is plain ASCII: ~!@#$%^&*()_+{}|:<>?",
  utf8: "Grüße aus Köln — ünïcødé ✓ 你好，世界 👋🏽 𝄞",
  big: bigBody(),
};

const KINDS = {
  JsSIP: [JsSIPPhone, JsSIPPhone],
  "SIP.js": [SipJsPhone, SipJsPhone],
  "JsSIP to SIP.js": [JsSIPPhone, SipJsPhone],
  // The server with Config.Compression: the ws package offers
  // permessage-deflate as browsers do, compresses what it sends past 1 KiB
  // (the 20 KB body) and inflates what the server sends with its window.
  "JsSIP to SIP.js, -compression": [JsSIPPhone, SipJsPhone, ["-compression"]],
};

for (const example of EXAMPLES)
for (const [kind, [A, B, args = []]] of Object.entries(KINDS)) {
  // -compression is a flag of the web phone (and examples/echo) only.
  if (args.includes("-compression") && example !== "webphone") continue;
  describe(`${example}: Node ${kind}`, { timeout: 90000 }, () => {
    let srv, port, alice, bob;
    const logs = [];

    before(async () => {
      port = await freePort();
      srv = await start({ example, port, logs, args });
      alice = new A(srv.wsURL, "alice");
      bob = new B(srv.wsURL, "bob");
      await alice.start();
      await bob.start();
    });

    after(async () => {
      await Promise.allSettled([alice && alice.stop(), bob && bob.stop()]);
      if (srv) await srv.stop();
    });

    test("REGISTER: both users online on the server", async () => {
      assert.deepEqual(await online(srv), {}, "nobody is registered before");
      await alice.register();
      assert.deepEqual(await online(srv), { alice: 1 });
      await bob.register();
      assert.deepEqual(await online(srv), { alice: 1, bob: 1 });
    });

    test("OPTIONS to the server: 200 from the server", async () => {
      for (const p of [alice, bob]) {
        const res = await p.options("sip:sipws.test");
        assert.equal(res.status, 200, `${p.kind} ${p.user}: status`);
        assert.match(res.server || "", srv.serverHeader, `${p.kind} ${p.user}: Server header of the 200`);
      }
    });

    for (const [name, body] of Object.entries(BODIES)) {
      test(`MESSAGE both ways, ${name} body (${Buffer.byteLength(body)} bytes): byte-exact, exactly once`, async () => {
        for (const [from, to] of [[alice, bob], [bob, alice]]) {
          const before = to.received.length;
          const res = await from.message(to.user, body);
          assert.equal(res.status, 200, `${from.user} → ${to.user}: status`);
          assert.ok(res.fromNetwork, `${from.user} → ${to.user}: the 200 came from the network`);
          await waitFor(() => to.received.length > before, `${to.user} to receive the MESSAGE`, 5000);
          await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show
          const got = to.received.slice(before);
          assert.equal(got.length, 1, `${to.user} received ${got.length} copies`);
          assert.equal(got[0].from, from.user);
          assert.equal(Buffer.byteLength(got[0].body), Buffer.byteLength(body), "length in bytes");
          assert.ok(Buffer.from(got[0].body).equals(Buffer.from(body)), "same bytes");
        }
      });
    }

    test("MESSAGE to an unknown user: 404 from the server", async () => {
      const res = await alice.message("nobody", "hello?");
      assert.equal(res.status, 404);
      assert.ok(res.fromNetwork);
    });

    test("un-REGISTER and REGISTER again", async () => {
      assert.equal(await alice.unregister(), 200);
      assert.deepEqual(await online(srv), { bob: 1 });
      const res = await bob.message("alice", "are you there?");
      assert.equal(res.status, 404, "no binding left for alice");
      await alice.register();
      assert.deepEqual(await online(srv), { alice: 1, bob: 1 });
    });

    test("server restart: clean close 1001, then the clients reconnect and register again", async () => {
      const regs = [alice.registrations, bob.registrations];
      const t0 = Date.now();
      const exit = await srv.stop("SIGTERM");
      assert.equal(exit.code, 0, `the ${example} exits 0 on SIGTERM`);
      for (const p of [alice, bob]) {
        // The first close after the signal is the server's; reconnection
        // attempts while it is down may fail (1006) after it. The client's
        // close event may come a moment after the process's exit.
        const since = () => (closes.get(p.url) || []).filter((c) => c.at >= t0);
        await waitFor(() => since().length > 0, `${p.kind} ${p.user} to see its WebSocket closed`, 5000);
        const seen = since();
        assert.equal(seen[0].code, 1001, `${p.kind} ${p.user}: close code`);
        assert.ok(seen[0].wasClean, `${p.kind} ${p.user}: clean close handshake`);
      }
      srv = await start({ example, port, logs, args });
      await waitFor(async () => {
        const o = await online(srv);
        return o.alice === 1 && o.bob === 1;
      }, "both clients to register again on the new server", 30000);
      assert.ok(alice.registrations > regs[0] && bob.registrations > regs[1], "the clients saw their new registrations");
      const res = await alice.message("bob", "back again");
      assert.equal(res.status, 200);
      await waitFor(() => bob.received.at(-1)?.body === "back again", "bob to get the MESSAGE after the restart", 5000);
    });

    test("un-REGISTER both", async () => {
      await alice.unregister();
      await bob.unregister();
      assert.deepEqual(await online(srv), {});
    });
  });
}

// With a users file: JsSIP and SIP.js answer the digest challenges (401 to
// REGISTER) with the right password and are refused with a wrong one; a
// client without credentials cannot register as a user, nor send as one.
describe("digest authentication (-users)", { timeout: 60000 }, () => {
  let srv, alice, bob, mallory, mallory2;
  const logs = [];

  before(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "webphone-users-"));
    const file = path.join(dir, "users");
    fs.writeFileSync(file, "alice:alice-pw\nbob:bob:pw:with:colons\n");
    srv = await start({ args: ["-users", file], logs });
    alice = new JsSIPPhone(srv.wsURL, "alice", { password: "alice-pw" });
    bob = new SipJsPhone(srv.wsURL, "bob", { password: "bob:pw:with:colons" });
    mallory = new JsSIPPhone(srv.wsURL, "alice", { password: "guess" });
    mallory2 = new SipJsPhone(srv.wsURL, "alice");
    for (const p of [alice, bob, mallory, mallory2]) await p.start();
  });

  after(async () => {
    await Promise.allSettled([alice, bob, mallory, mallory2].map((p) => p && p.stop()));
    if (srv) await srv.stop();
  });

  test("REGISTER with the right password (JsSIP, SIP.js); refused with a wrong one or none", async () => {
    await alice.register();
    await bob.register();
    assert.deepEqual(await online(srv), { alice: 1, bob: 1 });
    await assert.rejects(mallory.register(), /registration failed/);
    await assert.rejects(mallory2.register(), /./);
    assert.deepEqual(await online(srv), { alice: 1, bob: 1 });
  });

  test("MESSAGE both ways between authenticated users", async () => {
    let res = await alice.message("bob", "authenticated hello");
    assert.equal(res.status, 200);
    await waitFor(() => bob.received.at(-1)?.body === "authenticated hello", "bob to get the MESSAGE", 5000);
    res = await bob.message("alice", "and back");
    assert.equal(res.status, 200);
    await waitFor(() => alice.received.at(-1)?.body === "and back", "alice to get the MESSAGE", 5000);
  });

  test("a MESSAGE as alice from a connection that did not prove it is refused", async () => {
    const before = bob.received.length;
    const res = await mallory.message("bob", "it is me, alice");
    assert.ok([401, 403, 407].includes(res.status), `status ${res.status}`);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bob.received.length, before, "bob got nothing");
  });
});
