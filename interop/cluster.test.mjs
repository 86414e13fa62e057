// A cluster: two webphone nodes (three for a while) sharing one Redis, each
// started as the other tests start the webphone, with -node, -redis and
// -sip-addr. JsSIP and SIP.js on node a reach users on node b (MESSAGE both
// ways), a browser page on node a calls a page on node b, a node is killed
// (SIGKILL, no goodbye) mid-test and its users stop being reachable within
// seconds, and a phone that moves to another node is reachable again after
// its REGISTER. redis-server is Debian's, started and stopped here.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { JsSIPPhone, SipJsPhone, installWebSocket } from "./lib/clients.mjs";
import { T, launch, openPage, trace, assertSequence } from "./lib/page.mjs";

const require = createRequire(import.meta.url);
const { startNode, startRedis, getJSON, online, waitFor } = require("./lib/server.js");

installWebSocket();

const users = async (srv) => (await getJSON(srv, "/api/online")).users;

describe("cluster: nodes a and b, one Redis", { timeout: 180000 }, () => {
  let redis, a, b;
  const phones = [];

  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([startNode("a", redis.url), startNode("b", redis.url)]);
  });

  after(async () => {
    await Promise.allSettled(phones.map((p) => p.stop()));
    await Promise.allSettled([a && a.stop(), b && b.stop()]);
    if (redis) await redis.stop();
  });

  for (const [kind, Phone] of [["JsSIP", JsSIPPhone], ["SIP.js", SipJsPhone]]) {
    test(`${kind}: alice on node a and bob on node b, MESSAGE both ways`, async () => {
      const alice = new Phone(a.wsURL, `alice-${kind.toLowerCase()}`);
      const bob = new Phone(b.wsURL, `bob-${kind.toLowerCase()}`);
      phones.push(alice, bob);
      await alice.start();
      await bob.start();
      await alice.register();
      await bob.register();
      assert.equal((await online(a))[alice.user], 1, "alice's binding is node a's");
      assert.equal((await online(b))[bob.user], 1, "bob's binding is node b's");
      assert.equal((await online(a))[bob.user], undefined, "bob's binding is not node a's");
      for (const [from, to] of [[alice, bob], [bob, alice]]) {
        const body = `${from.user} → ${to.user}: Grüße ✓ 👋`;
        const before = to.received.length;
        const res = await from.message(to.user, body);
        assert.equal(res.status, 200, `${from.user} → ${to.user}: status`);
        await waitFor(() => to.received.length > before, `${to.user} to receive the MESSAGE`, 5000);
        await new Promise((r) => setTimeout(r, 200)); // room for a duplicate
        assert.equal(to.received.length, before + 1, "exactly once");
        assert.equal(to.received.at(-1).body, body, "byte-exact");
      }
      // Each node's public list has the users of both.
      for (const n of [a, b]) {
        const list = await users(n);
        assert.ok(list.includes(alice.user) && list.includes(bob.user), `online on ${n.url}: ${list}`);
      }
      await alice.stop();
      await bob.stop();
    });
  }

  test("browser: alice's page on node a calls bob's page on node b", async () => {
    const errors = [];
    const browser = await launch();
    try {
      const alice = await openPage(browser, a.url, "alice", errors);
      const bob = await openPage(browser, b.url, "bob", errors);
      for (const [page, name] of [[alice, "alice"], [bob, "bob"]]) {
        await page.fill("#name", name);
        await page.click("#register");
        await page.waitForSelector('body[data-reg="registered"][data-ws="connected"]', { timeout: T });
      }
      // bob is on the list of alice's page, though on another node.
      await alice.waitForSelector('#online li[data-user="bob"] button.call:not([disabled])', { timeout: T });
      await alice.click('#online li[data-user="bob"] button.call');
      await bob.waitForSelector('#call-state[data-state="incoming"]', { timeout: T });
      await bob.click("#answer");
      await alice.waitForSelector('#call-state[data-state="established"]', { timeout: T });
      await bob.waitForSelector('#call-state[data-state="established"]', { timeout: T });
      for (const [page, who] of [[alice, "alice"], [bob, "bob"]]) {
        await page.waitForFunction(() => window.webphone.session?.connection?.connectionState === "connected", null, { timeout: T })
          .catch(async () => assert.fail(`${who}: RTCPeerConnection is ${await page.evaluate(() => window.webphone.session?.connection?.connectionState)}`));
      }
      await alice.click("#hangup");
      await bob.waitForSelector('#call-state[data-state="ended"]', { timeout: T });
      assertSequence(await trace(alice), [
        ["out", "INVITE sip:bob@sipws.test ", "INVITE"],
        ["in", "SIP/2.0 200", "INVITE"],
        ["out", "ACK ", "ACK"],
        ["out", "BYE ", "BYE"],
        ["in", "SIP/2.0 200", "BYE"],
      ], "alice");
      assertSequence(await trace(bob), [["in", "INVITE ", "INVITE"], ["out", "SIP/2.0 200", "INVITE"], ["in", "ACK ", "ACK"], ["in", "BYE ", "BYE"]], "bob");
      assert.deepEqual(errors, [], "no page errors");
    } finally {
      await browser.close();
    }
  });

  test("node c killed mid-test: carol stops being reachable within seconds; she moves to node b and is reachable again", async () => {
    const c = await startNode("c", redis.url);
    try {
      const alice = new JsSIPPhone(a.wsURL, "alice");
      const carol = new JsSIPPhone(c.wsURL, "carol");
      phones.push(alice, carol);
      await alice.start();
      await carol.start();
      await alice.register();
      await carol.register();
      assert.equal((await alice.message("carol", "hello c")).status, 200);
      await waitFor(async () => (await users(a)).includes("carol"), "carol on node a's list");

      await c.stop("SIGKILL"); // no goodbye: its heartbeat lapses, its bindings stay in Redis
      const killed = Date.now();
      await waitFor(async () => (await alice.message("carol", "anyone?")).status === 404, "node a to stop using carol's binding", 10000);
      const took = Date.now() - killed;
      assert.ok(!(await users(a)).includes("carol"), "carol is off node a's list");
      console.log(`# node c's bindings unused ${took} ms after SIGKILL (heartbeat TTL 3 s)`);

      await carol.stop();
      const moved = new JsSIPPhone(b.wsURL, "carol");
      phones.push(moved);
      await moved.start();
      await moved.register();
      const res = await alice.message("carol", "found you");
      assert.equal(res.status, 200);
      await waitFor(() => moved.received.some((m) => m.body === "found you"), "carol on node b to receive it", 5000);
    } finally {
      await c.stop();
    }
  });
});
