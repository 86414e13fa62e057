// Real SIP clients in Node for the tests: JsSIP and SIP.js, each behind the
// same small interface, on the `ws` package as their WebSocket. Every
// WebSocket they open is recorded with how it closed, so that a test can
// check that the server closed it cleanly (1001) before a restart.
import JsSIP from "jssip";
import { UserAgent, Registerer, Messager } from "sip.js";
import WS from "ws";

export const DOMAIN = "sipws.test";

// closes maps a WebSocket URL to the closes seen on it, in order.
export const closes = new Map();

// installWebSocket makes globalThis.WebSocket (which JsSIP and SIP.js use) a
// `ws` WebSocket that records its close, optionally trusting a CA for wss.
export function installWebSocket({ ca } = {}) {
  globalThis.WebSocket = class RecordingWebSocket extends WS {
    constructor(url, protocols) {
      super(url, protocols, ca ? { ca } : {});
      this.addEventListener("close", (ev) => {
        const list = closes.get(String(url)) || [];
        list.push({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean, at: Date.now() });
        closes.set(String(url), list);
      });
    }
  };
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no outcome in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// received is what a phone got: { from, body } per MESSAGE, in order.

// JsSIPPhone is a JsSIP UA (with RFC 5626 Outbound: reg-id, +sip.instance).
export class JsSIPPhone {
  // password, when given, answers the server's digest challenges.
  constructor(wsURL, user, { password } = {}) {
    this.kind = "JsSIP";
    this.user = user;
    this.url = `${wsURL}?phone=jssip-${user}`;
    this.received = [];
    this.registrations = 0; // 'registered' events
    const socket = new JsSIP.WebSocketInterface(this.url);
    this.ua = new JsSIP.UA({
      sockets: [socket],
      uri: `sip:${user}@${DOMAIN}`,
      register: false,
      register_expires: 300,
      password,
      session_timers: false,
      user_agent: `interop JsSIP/${JsSIP.version}`,
      connection_recovery_min_interval: 1,
      connection_recovery_max_interval: 2,
    });
    this.ua.on("registered", () => this.registrations++);
    this.ua.on("newMessage", (e) => {
      if (e.originator !== "remote") return;
      this.received.push({ from: e.request.from.uri.user, body: e.request.body });
    });
  }

  async start() {
    const connected = new Promise((resolve) => this.ua.once("connected", resolve));
    this.ua.start();
    await withTimeout(connected, 5000, `${this.user}: connect`);
  }

  register() {
    return withTimeout(new Promise((resolve, reject) => {
      const ok = () => { off(); resolve(); };
      const bad = (e) => { off(); reject(new Error(`registration failed: ${e.cause} ${e.response ? e.response.status_code : ""}`)); };
      const off = () => { this.ua.off("registered", ok); this.ua.off("registrationFailed", bad); };
      this.ua.on("registered", ok);
      this.ua.on("registrationFailed", bad);
      this.ua.register();
    }), 5000, `${this.user}: REGISTER`);
  }

  unregister() {
    return withTimeout(new Promise((resolve) => {
      this.ua.once("unregistered", (e) => resolve(e.response ? e.response.status_code : null));
      this.ua.unregister();
    }), 5000, `${this.user}: un-REGISTER`);
  }

  // message sends a MESSAGE and resolves with the final status and whether a
  // response came from the network at all (a local timeout has none).
  message(to, body) {
    return withTimeout(new Promise((resolve) => {
      this.ua.sendMessage(`sip:${to}@${DOMAIN}`, body, {
        contentType: "text/plain;charset=utf-8",
        eventHandlers: {
          succeeded: (e) => resolve({ status: e.response.status_code, fromNetwork: true }),
          failed: (e) => resolve({ status: e.response ? e.response.status_code : 0, fromNetwork: !!e.response, cause: e.cause }),
        },
      });
    }), 10000, `${this.user}: MESSAGE`);
  }

  // options sends OPTIONS to target and resolves with the response's status
  // and Server header (null when the response was made up locally).
  options(target) {
    // A URI without user part must be given as a URI: as a string JsSIP
    // takes "sip:host" for a user name.
    const uri = JsSIP.URI.parse(target);
    return withTimeout(new Promise((resolve) => {
      this.ua.sendOptions(uri, null, {
        eventHandlers: {
          succeeded: (e) => resolve({ status: e.response.status_code, server: e.response.getHeader("server") || null }),
          failed: (e) => resolve({ status: e.response ? e.response.status_code : 0, server: e.response ? e.response.getHeader("server") || null : null, cause: e.cause }),
        },
      });
    }), 10000, `${this.user}: OPTIONS`);
  }

  stop() {
    this.ua.stop();
  }
}

// SipJsPhone is a SIP.js UserAgent and Registerer (no Outbound: no reg-id).
// SIP.js reconnects by itself (reconnectionAttempts); registering again once
// connected is the application's job, done here in onConnect as the SIP.js
// documentation shows.
export class SipJsPhone {
  constructor(wsURL, user, { password } = {}) {
    this.kind = "SIP.js";
    this.user = user;
    this.url = `${wsURL}?phone=sipjs-${user}`;
    this.received = [];
    this.registrations = 0; // REGISTERs accepted
    this.wantRegistered = false;
    this.logs = [];
    this.ua = new UserAgent({
      uri: UserAgent.makeURI(`sip:${user}@${DOMAIN}`),
      authorizationUsername: password ? user : undefined,
      authorizationPassword: password,
      transportOptions: { server: this.url, connectionTimeout: 5 },
      logBuiltinEnabled: false, // kept in this.logs instead
      logConnector: (level, category, label, content) => {
        this.logs.push(`${level} ${category}: ${content}`);
        if (this.logs.length > 500) this.logs.shift();
      },
      userAgentString: "interop SIP.js",
      reconnectionAttempts: 120,
      reconnectionDelay: 0.5,
      delegate: {
        onConnect: () => {
          if (this.wantRegistered) this.registerer.register({ requestDelegate: { onAccept: () => this.registrations++ } }).catch(() => {});
        },
        onMessage: (m) => {
          this.received.push({ from: m.request.from.uri.user, body: m.request.body });
          m.accept();
        },
      },
    });
    this.registerer = new Registerer(this.ua, { expires: 300 });
  }

  async start() {
    await withTimeout(this.ua.start(), 5000, `${this.user}: connect`);
  }

  register() {
    this.wantRegistered = true;
    return withTimeout(new Promise((resolve, reject) => {
      this.registerer.register({
        requestDelegate: {
          onAccept: () => {
            this.registrations++;
            resolve();
          },
          onReject: (r) => reject(new Error(`registration failed: ${r.message.statusCode}`)),
        },
      }).catch(reject);
    }), 5000, `${this.user}: REGISTER`);
  }

  unregister() {
    this.wantRegistered = false;
    return withTimeout(new Promise((resolve, reject) => {
      this.registerer.unregister({
        requestDelegate: {
          onAccept: (r) => resolve(r.message.statusCode),
          onReject: (r) => reject(new Error(`un-REGISTER failed: ${r.message.statusCode}`)),
        },
      }).catch(reject);
    }), 5000, `${this.user}: un-REGISTER`);
  }

  message(to, body) {
    return withTimeout(new Promise((resolve, reject) => {
      const m = new Messager(this.ua, UserAgent.makeURI(`sip:${to}@${DOMAIN}`), body, "text/plain;charset=utf-8");
      // A response SIP.js makes up (its 408 on a timeout) has no Via: one
      // from the network always has the one SIP.js sent.
      const outcome = (r) => resolve({ status: r.message.statusCode, fromNetwork: r.message.getHeaders("via").length > 0 });
      m.message({ requestDelegate: { onAccept: outcome, onReject: outcome } }).catch(reject);
    }), 10000, `${this.user}: MESSAGE`);
  }

  options(target) {
    return withTimeout(new Promise((resolve) => {
      const core = this.ua.userAgentCore;
      const uri = UserAgent.makeURI(target);
      const req = core.makeOutgoingRequestMessage("OPTIONS", uri, this.ua.configuration.uri, uri, {});
      const outcome = (r) => resolve({ status: r.message.statusCode, server: r.message.getHeader("server") || null });
      core.request(req, { onAccept: outcome, onReject: outcome });
    }), 10000, `${this.user}: OPTIONS`);
  }

  async stop() {
    this.wantRegistered = false;
    // Without this a stopped UserAgent goes on with its reconnection
    // attempts (each one failing with "User agent stopped.").
    this.ua.options.reconnectionAttempts = 0;
    try {
      await withTimeout(this.ua.stop(), 5000, `${this.user}: stop`);
    } catch {
      // stopping is best effort at the end of a test
    }
  }
}
