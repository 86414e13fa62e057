// The web phone: JsSIP (served by the webphone server as /jssip.js) over a
// WebSocket to the same server, plain DOM, no framework.
//
// State for tests and curious people: document.body.dataset.ws ("connected",
// "disconnected"), document.body.dataset.reg ("registered",
// "unregistered", "failed"), #call-state's data-state ("idle", "calling",
// "ringing", "incoming", "established", "ended"), the chat log's items
// (data-dir "in"/"out", data-peer, data-status) and the SIP trace's items
// (data-dir, data-first: the message's first line, data-method: its CSeq
// method). window.webphone holds the UA and
// the current call. With a users file on the server (/api/config's auth)
// the page asks for a password, which JsSIP uses to answer the digest
// challenges (401, 407); without one it says that the demo is open.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { config: null, ua: null, name: "", session: null, callStart: 0, timer: 0 };
window.webphone = state;

// --- small DOM helpers ---------------------------------------------------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function clock() {
  return new Date().toLocaleTimeString([], { hour12: false });
}

function fatal(text) {
  const p = $("#fatal");
  p.textContent = text;
  p.hidden = false;
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

// --- SIP trace: every message this phone sends and receives ---------------

const TRACE_MAX = 300;

function trace(dir, data) {
  const text = typeof data === "string" ? data : new TextDecoder().decode(data);
  if (text.trim() === "") return; // CRLF keepalives
  const first = text.slice(0, text.indexOf("\r\n") >>> 0);
  const cseq = /^CSeq:\s*\d+\s+(\S+)/im.exec(text);
  const log = $("#sip-trace");
  log.append(el("li", {
    dataset: { dir, first, method: cseq ? cseq[1] : "" },
    title: text,
    textContent: `${clock()}  ${first}`,
  }));
  while (log.children.length > TRACE_MAX) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
}

// makeSocket returns JsSIP's WebSocket interface with the trace hooked into
// what it sends and what it hands to JsSIP's transport.
function makeSocket(url) {
  class TracedSocket extends JsSIP.WebSocketInterface {
    send(message) {
      trace("out", message);
      return super.send(message);
    }
    set ondata(fn) {
      this._traceOndata = fn;
    }
    get ondata() {
      return (data) => {
        trace("in", data);
        this._traceOndata(data);
      };
    }
  }
  return new TracedSocket(url);
}

// --- registration -----------------------------------------------------------

function setWS(status) {
  document.body.dataset.ws = status;
  $("#ws-status").textContent = status;
  $("#ws-pill").className = "pill " + (status === "connected" ? "on" : status === "connecting" ? "wait" : "off");
}

function setReg(status, text) {
  document.body.dataset.reg = status;
  $("#reg-status").textContent = text || status;
  $("#reg-pill").className = "pill " + (status === "registered" ? "on" : status === "registering" ? "wait" : "off");
  const on = status === "registered";
  $("#call-button").disabled = !on || state.session !== null;
  $("#chat-send").disabled = !on;
}

function wsURL() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${state.config.ws_path}`;
}

function uriOf(user) {
  return `sip:${user}@${state.config.domain}`;
}

function start(name, password) {
  stop();
  state.name = name;
  $("#my-uri").textContent = uriOf(name);
  const ua = new JsSIP.UA({
    sockets: [makeSocket(wsURL())],
    uri: uriOf(name),
    display_name: name,
    register: true,
    register_expires: 300,
    password: password || undefined,
    session_timers: false,
    user_agent: `sipws-webphone JsSIP/${JsSIP.version}`,
    connection_recovery_min_interval: 1,
    connection_recovery_max_interval: 8,
  });
  state.ua = ua;
  ua.on("connecting", () => setWS("connecting"));
  ua.on("connected", () => setWS("connected"));
  ua.on("disconnected", (e) => {
    setWS("disconnected");
    if (ua === state.ua) setReg("unregistered", `not registered (connection closed${e.code ? ", " + e.code : ""})`);
  });
  ua.on("registered", () => setReg("registered", `registered as ${name}`));
  ua.on("unregistered", () => setReg("unregistered", "not registered"));
  ua.on("registrationFailed", (e) => {
    const why = e.response ? `${e.response.status_code} ${e.response.reason_phrase}` : e.cause;
    setReg("failed", `registration failed: ${why}`);
  });
  ua.on("newRTCSession", (e) => onSession(e.session, e.originator));
  ua.on("newMessage", (e) => {
    if (e.originator !== "remote") return;
    const from = e.request.from.uri.user;
    chatLine("in", from, e.request.body);
  });
  setReg("registering", "registering…");
  ua.start();
  $("#unregister").disabled = false;
  $("#register").textContent = "Re-register";
}

function stop() {
  if (!state.ua) return;
  const ua = state.ua;
  state.ua = null;
  if (state.session) state.session.terminate();
  ua.stop(); // un-REGISTERs, then closes the WebSocket
  setReg("unregistered", "not registered");
  $("#unregister").disabled = true;
  $("#register").textContent = "Register";
}

// --- calls ------------------------------------------------------------------

function setCall(s, peer) {
  $("#call-state").dataset.state = s;
  $("#call").dataset.state = s;
  $("#call-state").textContent = s;
  if (peer !== undefined) $("#call-peer").textContent = peer ? (s === "incoming" ? "from " : "with ") + peer : "";
  const live = state.session !== null;
  $("#answer").hidden = s !== "incoming";
  $("#decline").hidden = s !== "incoming";
  $("#hangup").hidden = !live || s === "incoming";
  $("#mute").hidden = s !== "established";
  $("#call-button").disabled = live || document.body.dataset.reg !== "registered";
}

function tick() {
  $("#call-timer").textContent = state.callStart ? duration(Date.now() - state.callStart) : "";
}

function attachAudio(pc) {
  pc.addEventListener("track", (ev) => {
    const audio = $("#remote-audio");
    audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    audio.play().catch(() => {});
  });
}

function onSession(session, originator) {
  if (state.session) {
    // One call at a time: a second incoming call is busy.
    if (originator === "remote") session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
    return;
  }
  state.session = session;
  const peer = session.remote_identity.uri.user;
  if (session.connection) attachAudio(session.connection);
  else session.on("peerconnection", (e) => attachAudio(e.peerconnection));

  session.on("progress", () => {
    if (session.direction === "outgoing") setCall("ringing", peer);
  });
  session.on("confirmed", () => {
    state.callStart = Date.now();
    state.timer = setInterval(tick, 500);
    tick();
    setCall("established", peer);
  });
  const end = (e) => {
    if (state.session !== session) return;
    state.session = null;
    clearInterval(state.timer);
    state.callStart = 0;
    $("#call-timer").textContent = "";
    const who = e.originator === "local" ? "you" : e.originator === "remote" ? peer : "the network";
    setCall("ended", `${peer} (${e.cause}, by ${who})`);
  };
  session.on("ended", end);
  session.on("failed", end);
  setCall(originator === "remote" ? "incoming" : "calling", peer);
}

const mediaOptions = {
  mediaConstraints: { audio: true, video: false },
  pcConfig: { iceServers: [] },
  rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
};

function call(user) {
  user = user.trim();
  if (!user || !state.ua || state.session) return;
  $("#call-to").value = user;
  state.ua.call(uriOf(user), mediaOptions);
}

// --- chat -------------------------------------------------------------------

function chatLine(dir, peer, text, error) {
  const log = $("#chat-log");
  const li = el("li", { dataset: { dir, peer } },
    el("span", { class: "meta", textContent: clock() }),
    el("span", { class: "peer", textContent: (dir === "in" ? peer + " → you" : "you → " + peer) + ": " }),
    el("span", { class: "text", textContent: text }));
  if (error) {
    li.classList.add("error");
    li.append(el("span", { class: "meta", textContent: "  (" + error + ")" }));
  }
  log.append(li);
  log.scrollTop = log.scrollHeight;
  return li;
}

function sendChat(to, text) {
  if (!state.ua) return;
  const li = chatLine("out", to, text);
  li.dataset.status = "sending";
  state.ua.sendMessage(uriOf(to), text, {
    contentType: "text/plain;charset=utf-8",
    eventHandlers: {
      succeeded: () => { li.dataset.status = "delivered"; },
      failed: (e) => {
        li.dataset.status = "failed";
        li.classList.add("error");
        const why = e.response ? `${e.response.status_code} ${e.response.reason_phrase}` : e.cause;
        li.append(el("span", { class: "meta", textContent: "  (not delivered: " + why + ")" }));
      },
    },
  });
}

// --- online users and connections, polled --------------------------------

async function getJSON(path) {
  const res = await fetch(path, { cache: "no-store" });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

async function pollOnline() {
  let data;
  try {
    data = await getJSON("/api/online?limit=200");
  } catch {
    return;
  }
  const ul = $("#online");
  ul.replaceChildren();
  $("#online-count").textContent = `(${data.total})`;
  if (data.users.length === 0) ul.append(el("li", { class: "empty", textContent: "nobody yet" }));
  for (const user of data.users) {
    const me = user === state.name.toLowerCase() && document.body.dataset.reg === "registered";
    const li = el("li", { dataset: { user } }, el("span", { class: "who", textContent: user }));
    if (me) li.append(el("span", { class: "me", textContent: "you" }));
    else {
      li.append(el("button", { class: "small call", type: "button", textContent: "Call", onclick: () => call(user),
        disabled: !state.ua || state.session !== null }));
      li.append(el("button", { class: "small secondary chat", type: "button", textContent: "Chat",
        onclick: () => { $("#chat-to").value = user; $("#chat-text").focus(); } }));
    }
    ul.append(li);
  }
  if (data.total > data.users.length) ul.append(el("li", { class: "empty", textContent: `and ${data.total - data.users.length} more` }));
}

function poll() {
  pollOnline();
}

// --- wiring -----------------------------------------------------------------

async function main() {
  if (typeof JsSIP === "undefined") {
    fatal("JsSIP did not load (GET /jssip.js failed): run `npm ci --prefix examples/webphone/web` and restart the server (make demo does both).");
    return;
  }
  try {
    state.config = await getJSON("/api/config");
  } catch (err) {
    fatal("The server did not answer /api/config: " + err.message);
    return;
  }
  $("#my-uri").textContent = uriOf("…");
  $("#open-mode").hidden = state.config.auth;
  $("#password").hidden = !state.config.auth;
  $("#password").required = state.config.auth;
  const params = new URLSearchParams(location.search);
  if (params.get("name")) $("#name").value = params.get("name");

  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = $("#name").value.trim();
    if (name) start(name, state.config.auth ? $("#password").value : "");
  });
  $("#unregister").addEventListener("click", stop);
  $("#dial").addEventListener("submit", (ev) => {
    ev.preventDefault();
    call($("#call-to").value);
  });
  $("#answer").addEventListener("click", () => state.session && state.session.answer(mediaOptions));
  $("#decline").addEventListener("click", () => state.session && state.session.terminate({ status_code: 603, reason_phrase: "Decline" }));
  $("#hangup").addEventListener("click", () => state.session && state.session.terminate());
  $("#mute").addEventListener("click", () => {
    const s = state.session;
    if (!s) return;
    if (s.isMuted().audio) s.unmute({ audio: true });
    else s.mute({ audio: true });
    $("#mute").textContent = s.isMuted().audio ? "Unmute" : "Mute";
  });
  $("#chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const to = $("#chat-to").value.trim();
    const text = $("#chat-text").value;
    if (!to || !text) return;
    sendChat(to, text);
    $("#chat-text").value = "";
  });
  window.addEventListener("beforeunload", stop);

  setWS("disconnected");
  setReg("unregistered", "not registered");
  setCall("idle", "");
  poll();
  setInterval(poll, 2000);
}

main();
