// wss: the webphone with -self-signed, and JsSIP registering over TLS. The
// test trusts exactly the certificate the server made (fetched from its TLS
// handshake and given to `ws` as the CA), so certificate checking stays on.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import tls from "node:tls";
import { createRequire } from "node:module";
import { JsSIPPhone, installWebSocket } from "./lib/clients.mjs";

const require = createRequire(import.meta.url);
const { start, online, getJSON, adminJSON, EXAMPLES } = require("./lib/server.js");

// serverCertificate returns the PEM of the certificate the server presents.
function serverCertificate(port) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      const der = sock.getPeerCertificate().raw;
      sock.end();
      const b64 = der.toString("base64").replace(/.{64}/g, "$&\n");
      resolve(`-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`);
    });
    sock.on("error", reject);
    sock.setTimeout(5000, () => sock.destroy(new Error("TLS handshake timed out")));
  });
}

for (const example of EXAMPLES)
describe(`${example}: wss with a self-signed certificate`, { timeout: 60000 }, () => {
  let srv, alice, bob;

  before(async () => {
    srv = await start({ example, args: ["-self-signed"] });
    assert.match(srv.url, /^https:/);
    assert.match(srv.wsURL, /^wss:/);
    srv.ca = await serverCertificate(srv.port); // for getJSON
    installWebSocket({ ca: srv.ca });
  });

  after(async () => {
    for (const p of [alice, bob]) if (p) p.stop();
    if (srv) await srv.stop();
  });

  test("a client that does not trust the certificate is refused by TLS", async () => {
    // Guards the test itself: without the CA the handshake must fail, so
    // the registration below really depends on TLS verification.
    await assert.rejects(getJSON({ url: srv.url }, "/api/online"), /self-signed|certificate/);
  });

  test("JsSIP REGISTER over wss; the server sees two wss connections", async () => {
    alice = new JsSIPPhone(srv.wsURL, "alice");
    bob = new JsSIPPhone(srv.wsURL, "bob");
    await alice.start();
    await bob.start();
    await alice.register();
    await bob.register();
    assert.deepEqual(await online(srv), { alice: 1, bob: 1 });
    const conns = await adminJSON(srv, "/api/connections");
    assert.equal(conns.total, 2);
    for (const c of conns.connections) assert.equal(c.transport, "wss", `connection ${c.id}`);
  });

  test("MESSAGE and OPTIONS over wss", async () => {
    const res = await alice.message("bob", "über TLS ✓");
    assert.equal(res.status, 200);
    assert.equal(bob.received.at(-1).body, "über TLS ✓");
    const opt = await bob.options("sip:sipws.test");
    assert.equal(opt.status, 200);
    assert.match(opt.server || "", srv.serverHeader);
  });

  test("un-REGISTER over wss", async () => {
    assert.equal(await alice.unregister(), 200);
    assert.equal(await bob.unregister(), 200);
    assert.deepEqual(await online(srv), {});
  });
});
