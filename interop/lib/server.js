// Starts and stops an example's binary (the web phone, sipgoproxy) for a test, and small helpers that
// every test file shares. Everything here talks to 127.0.0.1 only.
"use strict";

const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const repo = path.resolve(__dirname, "..", "..");
const webDir = path.join(repo, "examples", "webphone", "web");

// EXAMPLES are the servers the interop tests run against: the web phone
// (its own small proxy) and sipgoproxy (the same job on sipgo, through
// sipwssipgo). INTEROP_EXAMPLES=webphone (comma-separated) picks some.
const EXAMPLES = (process.env.INTEROP_EXAMPLES || "webphone,sipgoproxy").split(",").filter(Boolean);

// binEnv names the environment variable that holds a prebuilt binary.
const binEnv = { webphone: "WEBPHONE_BIN", sipgoproxy: "SIPGOPROXY_BIN" };

const builtBinary = {};

// binary returns the example's binary: $WEBPHONE_BIN or $SIPGOPROXY_BIN
// (scripts/test.sh builds them), or one built here once per test process.
function binary(example) {
  if (!binEnv[example]) throw new Error(`unknown example ${example}`);
  if (process.env[binEnv[example]]) return process.env[binEnv[example]];
  if (!builtBinary[example]) {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), example + "-")), example);
    execFileSync("go", ["build", "-o", out, "./examples/" + example], { cwd: repo, stdio: "inherit" });
    builtBinary[example] = out;
  }
  return builtBinary[example];
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Server is one run of an example's binary.
class Server {
  constructor(proc, url, example) {
    this.proc = proc;
    this.example = example;
    // serverHeader matches the Server header of the example's own responses.
    this.serverHeader = new RegExp(`^sipws-${example}`);
    this.url = url; // http(s)://127.0.0.1:PORT/
    const u = new URL(url);
    this.port = Number(u.port);
    this.wsURL = `${u.protocol === "https:" ? "wss" : "ws"}://${u.host}/ws`;
    this.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  }

  // stop sends SIGTERM (the graceful shutdown: 1001 to every client) and
  // waits for the exit, at most 15 s, then kills.
  async stop(signal = "SIGTERM") {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill("SIGKILL"), 15000);
    const res = await this.exited;
    clearTimeout(t);
    return res;
  }
}

// start runs the example's binary (the web phone by default) on
// 127.0.0.1:port (0: any free port) with extra
// flags, and its -admin listener on another free loopback port, and
// resolves once it logs "listening on URL". Its log goes to logs (an array
// of lines) and, with WEBPHONE_LOG=1, to stderr. env holds variables added
// to the process's environment (GODEBUG for -http2).
async function start({ example = "webphone", port = 0, args = [], logs = [], env = {} } = {}) {
  const admin = [];
  if (!args.includes("-admin")) admin.push("-admin", "127.0.0.1:0");
  let adminURL = "";
  const proc = spawn(binary(example), ["-addr", `127.0.0.1:${port}`, "-web", webDir, ...admin, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, ...env },
  });
  let buf = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`the ${example} did not start in 15 s:\n` + logs.join("\n")));
    }, 15000);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        logs.push(line);
        if (process.env.WEBPHONE_LOG) process.stderr.write(`  [${example}] ` + line + "\n");
        const a = /admin: operations RPC on (http:\/\/[^\s"/]+)\/RPC/.exec(line);
        if (a) adminURL = a[1] + "/";
        const m = /listening on (https?:\/\/[^\s"]+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the ${example} exited with ${code}:\n` + logs.join("\n")));
    });
  });
  const srv = new Server(proc, url, example);
  srv.logs = logs;
  srv.adminURL = adminURL; // the operator's views: /api/connections, /api/bindings
  return srv;
}

// getJSON fetches a JSON API of the server (over https trusting srv.ca,
// when the test set it).
function getJSON(srv, p) {
  const u = new URL(p, srv.url);
  const mod = u.protocol === "https:" ? require("node:https") : require("node:http");
  return new Promise((resolve, reject) => {
    const req = mod.get(u, { ca: srv.ca, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`GET ${p}: ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${p}: timed out`)));
    req.on("error", reject);
  });
}

// adminJSON fetches an operator's view from the -admin listener.
function adminJSON(srv, p) {
  return getJSON({ url: srv.adminURL }, p);
}

// online returns the registered users, from the server's side (the -admin
// listener's /api/bindings): user -> number of bindings.
async function online(srv) {
  const data = await adminJSON(srv, "/api/bindings?limit=1000");
  const out = {};
  for (const b of data.bindings) out[b.user] = (out[b.user] || 0) + 1;
  return out;
}

// waitFor polls cond (sync or async) until it is truthy or ms pass.
async function waitFor(cond, what, ms = 10000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await cond();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}` + (last instanceof Error ? `: ${last.message}` : ""));
    await new Promise((r) => setTimeout(r, 50));
  }
}

// serverCertificate returns the PEM of the certificate the server on
// 127.0.0.1:port presents (the one -self-signed made), for a client to trust
// exactly that one.
function serverCertificate(port) {
  return new Promise((resolve, reject) => {
    const sock = require("node:tls").connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      const der = sock.getPeerCertificate().raw;
      sock.end();
      const b64 = der.toString("base64").replace(/.{64}/g, "$&\n");
      resolve(`-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`);
    });
    sock.on("error", reject);
    sock.setTimeout(5000, () => sock.destroy(new Error("TLS handshake timed out")));
  });
}

// startRedis runs Debian's redis-server on a free 127.0.0.1 port, without
// persistence, for the cluster tests (never a system service), and
// resolves once it answers; stop() ends it. Node's own TCP client speaks
// RESP here, so that the tests need no Redis package.
async function startRedis() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "redis-"));
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (c) => (log += c));
  const spawned = new Promise((resolve, reject) => {
    proc.once("error", (err) => reject(new Error(`redis-server: ${err.message} (apt-get install redis-server; scripts/test.sh does)`)));
    proc.once("spawn", resolve);
  });
  await spawned;
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  const ping = () => new Promise((resolve) => {
    const c = net.connect(port, "127.0.0.1");
    c.setTimeout(1000);
    c.on("data", (d) => { c.destroy(); resolve(String(d).startsWith("+PONG")); });
    c.on("error", () => resolve(false));
    c.on("timeout", () => { c.destroy(); resolve(false); });
    c.on("connect", () => c.write("PING\r\n"));
  });
  await waitFor(ping, "redis-server to answer PING:\n" + log, 10000);
  return {
    url: `redis://127.0.0.1:${port}/0`,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// startNode starts a webphone as node name of a cluster on redisURL, its
// -sip-addr on a free loopback port.
function startNode(name, redisURL, opts = {}) {
  return start({ ...opts, args: ["-node", name, "-redis", redisURL, "-sip-addr", "127.0.0.1:0", ...(opts.args || [])] });
}

module.exports = { start, startNode, startRedis, freePort, getJSON, adminJSON, online, waitFor, webDir, repo, EXAMPLES, serverCertificate };
