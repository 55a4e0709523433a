#!/usr/bin/env node
// The page's script (src/server/page.js) on a simulated clock, against scripted servers:
// every branch of the return logic and the ETA text, in well under a second. Run by
// tests/browser/run before the browser scenarios; `node tests/browser/page_logic.js` alone
// works too. Prints one line per case and `page logic: N passed, N failed`.
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const SRC = fs.readFileSync(path.join(__dirname, "../../src/server/page.js"), "utf8");
const BODY = SRC.replace(/^\s*<script>/, "").replace(/<\/script>\s*$/, "");
const T0 = Date.UTC(2026, 10, 22, 13, 0, 0);   // 2026-11-22 13:00:00 UTC
// The visitor: in Berlin, with British English (24-hour clock) as the browser's language.
process.env.TZ = "Europe/Berlin";
const LOCALE = "en-GB";

// ---------------------------------------------------------------- a tiny fake DOM
class Node_ {
  constructor(tag) { this.tag = tag; this.kids = []; this.style = {}; this.hidden = false; this.text = ""; }
  get textContent() { return this.tag === "#text" ? this.text : this.kids.map((k) => k.textContent).join(""); }
  set textContent(v) { if (this.tag === "#text") this.text = v; else { this.kids = []; if (v) { const t = new Node_("#text"); t.text = v; this.kids.push(t); } } }
  appendChild(n) { this.kids.push(n); return n; }
  cloneNode() { const c = new Node_(this.tag); c.style = { ...this.style }; c.text = this.text; c.kids = this.kids.map((k) => k.cloneNode()); return c; }
}

// ---------------------------------------------------------------- the simulation
// server(req) -> { after: ms, status, headers: {}, type } | { after, error: true } | { never: true }
// req = { t (ms since start), url, path, kind: "wait" | "check", n (index) }
async function simulate({ server, until = null, href = "http://shop.example/cart?x=1", hidden = false,
                          duration = 10 * 60e3, onTime = [] }) {
  let now = T0, seq = 0;
  const queue = [];                         // { at, seq, fn }
  const push = (at, fn) => { queue.push({ at, seq: ++seq, fn }); return seq; };
  const cancelled = new Set();
  const out = { requests: [], replaced: null, reloads: 0, replaceState: null, stopped: false };
  const eta = new Node_("span"), note = new Node_("p");
  note.hidden = true;
  const listeners = {};
  const doc = {
    hidden,
    querySelectorAll: (sel) => sel === "[data-maint-eta]" ? [eta] : sel === "[data-maint-script]" ? [note] : [],
    createElement: (tag) => new Node_(tag),
    createTextNode: (s) => { const t = new Node_("#text"); t.text = s; return t; },
    addEventListener: (ev, f) => { (listeners[ev] = listeners[ev] || []).push(f); },
  };
  const location = {
    href,
    replace(u) { if (!out.replaced) out.replaced = { t: now - T0, url: u }; out.stopped = true; },
    reload() { out.reloads++; out.stopped = true; },
  };
  class FakeDate extends Date {
    constructor(...a) { if (a.length) super(...a); else super(now); }
    static now() { return now; }
    toLocaleTimeString(l, o) { return super.toLocaleTimeString(l && l.length ? l : LOCALE, o); }
    toLocaleDateString(l, o) { return super.toLocaleDateString(l && l.length ? l : LOCALE, o); }
  }
  class AbortController_ {
    constructor() { this.signal = { aborted: false, fns: [] }; }
    abort() { if (!this.signal.aborted) { this.signal.aborted = true; this.signal.fns.forEach((f) => f()); } }
  }
  const win = {
    fetch(url, opts) {
      const u = new URL(url, href);
      const req = { t: now - T0, url: u.href, path: u.pathname, kind: u.pathname === "/.maint/wait" ? "wait" : "check",
                    n: out.requests.length, method: opts.method || "GET", cache: opts.cache, redirect: opts.redirect };
      out.requests.push(req);
      return new Promise((resolve, reject) => {
        let done = false;
        if (opts.signal) opts.signal.fns.push(() => { if (!done) { done = true; reject(new Error("aborted")); } });
        const a = server(req);
        if (a.never) return;
        push(now + (a.after || 0), () => {
          if (done) return;
          done = true;
          if (a.error) return reject(new TypeError("Failed to fetch"));
          const h = {};
          for (const k of Object.keys(a.headers || {})) h[k.toLowerCase()] = a.headers[k];
          resolve({ status: a.status, type: a.type || "basic",
                    headers: { get: (k) => (k.toLowerCase() in h ? h[k.toLowerCase()] : null) },
                    body: { cancel: () => Promise.resolve() } });
        });
      });
    },
    AbortController: AbortController_,
    addEventListener: (ev, f) => { (listeners[ev] = listeners[ev] || []).push(f); },
  };
  const ctx = {
    window: win, document: doc, location, Date: FakeDate, Math, Array, String, isFinite, URL, Promise, Error, TypeError,
    history: { state: null, replaceState(s, t, u) { out.replaceState = u; } }, AbortController: AbortController_,
    setTimeout: (f, ms) => push(now + Math.max(0, +ms || 0), f),
    clearTimeout: (id) => cancelled.add(id),
  };
  ctx.fetch = win.fetch;
  const script = BODY.replace("UNTIL_MS", until === null ? "null" : String(until)).replace("WAIT_PATH", '"/.maint/wait"');
  vm.runInNewContext(script, ctx);
  out.etaAtStart = eta.textContent;
  out.noteShown = !note.hidden;
  const flush = () => new Promise((r) => setImmediate(r));
  for (let i = 0; i < 5; i++) await flush();
  const actions = onTime.slice().sort((a, b) => a.t - b.t);
  while (!out.stopped) {
    queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const next = queue[0];
    const act = actions[0];
    if (act && (!next || T0 + act.t <= next.at)) {
      actions.shift();
      now = Math.max(now, T0 + act.t);
      act.fn({ doc, listeners, eta, out });
    } else {
      if (!next || next.at - T0 > duration) break;
      queue.shift();
      now = next.at;
      if (!cancelled.has(next.seq)) next.fn();
    }
    for (let i = 0; i < 5; i++) await flush();
  }
  out.eta = eta.textContent;
  out.end = now - T0;
  return out;
}

// ---------------------------------------------------------------- servers
const HOLD = 50e3;
const ON = { status: 204, headers: { "x-maintenance": "on" } };
const OFF = { status: 204, headers: { "x-maintenance": "off", connection: "close" } };
const MAINT_PAGE = { status: 503, headers: { "x-maintenance": "on" } };
const APP = { status: 200, headers: {} };
const APP_404 = { status: 404, headers: {} };
const BAD_GW = { status: 502, headers: {} };

// maint holding until `offAt` (ms), then the app; `appFrom(t)` what the app answers at t.
function maintThen(offAt, app = () => APP, wait404 = () => APP_404) {
  return (req) => {
    if (req.t < offAt) {
      if (req.kind === "wait") return { ...(req.t + HOLD < offAt ? ON : OFF), after: Math.min(HOLD, offAt - req.t) };
      return { ...MAINT_PAGE, after: 5 };
    }
    const a = req.kind === "wait" ? wait404(req.t) : app(req.t);
    return { ...a, after: 5 };
  };
}

// ---------------------------------------------------------------- cases
let passed = 0, failed = 0;
function check(name, ok, detail) {
  if (ok) passed++; else failed++;
  console.log(`  ${ok ? "ok  " : "FAIL"} ${name}${detail ? " - " + detail : ""}`);
}
const perMinute = (reqs, from, to) => reqs.filter((r) => r.t >= from && r.t < to).length / ((to - from) / 60e3);
const gaps = (reqs) => reqs.slice(1).map((r, i) => r.t - reqs[i].t);

(async () => {
  let o;

  o = await simulate({ server: maintThen(Infinity), duration: 30 * 60e3 });
  check("idle while on: holds, about 1.2 requests a minute, all to the wait path",
    perMinute(o.requests, 0, 30 * 60e3) <= 1.25 && o.requests.every((r) => r.kind === "wait") && !o.replaced,
    `${o.requests.length} requests in 30 min`);
  check("the wait request bypasses caches and never follows a redirect",
    o.requests.every((r) => r.cache === "no-store" && r.redirect === "manual" && r.method === "GET"));

  o = await simulate({ server: (req) => ({ ...(req.kind === "wait" ? { status: 404, headers: { "x-maintenance": "on" } } : MAINT_PAGE), after: 3 }),
                       duration: 30 * 60e3 });
  check("a server without the wait endpoint (answers at once, still maint's): at most 2 a minute",
    perMinute(o.requests, 0, 30 * 60e3) <= 2.05 && Math.min(...gaps(o.requests)) >= 29e3,
    `${o.requests.length} requests in 30 min, shortest gap ${Math.min(...gaps(o.requests))} ms`);

  o = await simulate({ server: maintThen(125e3) });
  check("off: back with location.replace of the same URL, at once",
    o.replaced && o.replaced.url === "http://shop.example/cart?x=1" && o.replaced.t - 125e3 < 100 && o.reloads === 0,
    JSON.stringify(o.replaced));
  check("off: the check is a GET of the page's own URL asking for HTML",
    o.requests.some((r) => r.kind === "check" && r.method === "GET" && r.url === "http://shop.example/cart?x=1"));

  o = await simulate({ server: maintThen(70e3, (t) => (t < 75e3 ? BAD_GW : APP), (t) => (t < 75e3 ? BAD_GW : APP_404)) });
  const after = o.requests.filter((r) => r.t >= 70e3);
  check("502 for 5 s after off: keeps waiting, backs off, then back on the app",
    o.replaced && o.replaced.t >= 75e3 && o.replaced.t < 75e3 + 4.1e3 && o.reloads === 0 && after.length <= 10,
    `back at +${((o.replaced ? o.replaced.t : NaN) - 70e3) / 1e3} s after off, ${after.length} requests`);

  o = await simulate({ server: maintThen(10e3, (t) => (t < 10e3 + 10 * 60e3 ? BAD_GW : APP), (t) => ({ error: true })),
                       duration: 12 * 60e3 });
  const outage = o.requests.filter((r) => r.t > 10e3 && r.t < 10e3 + 10 * 60e3);
  const g = gaps(outage);
  check("a long outage after off: never a tight loop, backs off to one check every 30 s",
    Math.min(...g) >= 0 && outage.filter((r) => r.kind === "check").length <= 30 &&
      Math.max(...gaps(outage.filter((r) => r.kind === "check"))) <= 30.1e3 && o.replaced,
    `${outage.length} requests in 10 min, longest wait between checks ${Math.max(...gaps(outage.filter((r) => r.kind === "check"))) / 1e3} s`);

  o = await simulate({ server: (req) => (req.t < 100e3 ? { error: true, after: 1 } : { ...(req.kind === "wait" ? ON : MAINT_PAGE), after: req.kind === "wait" ? HOLD : 5 }),
                       duration: 10 * 60e3 });
  const late = o.requests.filter((r) => r.t > 200e3);
  check("network errors, then maintenance again: backs off, then holds (1.2 a minute)",
    !o.replaced && perMinute(late, 200e3, 600e3) <= 1.25 && o.requests.filter((r) => r.t < 100e3).length <= 16,
    `${o.requests.filter((r) => r.t < 100e3).length} requests during 100 s of errors`);

  o = await simulate({ server: (req) => (req.kind === "wait" && req.n === 0 ? { never: true } : { ...(req.kind === "wait" ? APP_404 : APP), after: 5 }) });
  check("a held request nobody ever answers is given up after 70 s",
    o.replaced && o.replaced.t >= 70e3 && o.replaced.t < 71e3, `back at ${o.replaced && o.replaced.t / 1e3} s`);

  let stale = 0;
  o = await simulate({ server: (req) => {
    if (req.t < 30e3) return { ...(req.kind === "wait" ? OFF : MAINT_PAGE), after: req.kind === "wait" ? 30e3 : 5 };
    if (req.kind === "check" && stale++ < 2) return { ...MAINT_PAGE, after: 5 };   // an old connection to maint
    if (req.kind === "wait" && req.t < 33e3) return { ...OFF, after: 1 };
    return { ...(req.kind === "wait" ? APP_404 : APP), after: 5 };
  } });
  check("after off, a check that still meets maint's page: tries again shortly",
    o.replaced && o.replaced.t < 30e3 + 4e3 && o.reloads === 0, `back at +${o.replaced && (o.replaced.t - 30e3) / 1e3} s`);

  o = await simulate({ server: maintThen(0, () => ({ status: 302, headers: {}, type: "opaqueredirect" })) });
  check("the site answers with a redirect: that is the site, go back", !!o.replaced);

  o = await simulate({ server: maintThen(0, () => ({ status: 503, headers: {} })) , duration: 60e3 });
  check("the site answers 503 without maint's marker (the app's own error): keep waiting", !o.replaced);

  o = await simulate({ server: maintThen(0, () => ({ status: 200, headers: { "X-Maintenance": "on" } })), duration: 60e3 });
  check("a 200 that carries maint's marker: keep waiting", !o.replaced);

  o = await simulate({ server: maintThen(40e3), href: "http://shop.example/app#/orders/7" });
  check("a URL with a fragment: stepped aside first, so replace() loads the page",
    o.replaced && o.replaced.url === "http://shop.example/app#/orders/7" && o.replaceState === "http://shop.example/app?",
    `replaceState ${o.replaceState}`);

  o = await simulate({ server: maintThen(200e3), hidden: true,
                       onTime: [{ t: 300e3, fn: ({ doc, listeners }) => { doc.hidden = false; (listeners.visibilitychange || []).forEach((f) => f()); } }] });
  check("a hidden tab sends nothing; shown after off, it goes back at once",
    o.requests.every((r) => r.t >= 300e3) && o.replaced && o.replaced.t - 300e3 < 100,
    `${o.requests.filter((r) => r.t < 300e3).length} requests while hidden`);

  o = await simulate({ server: maintThen(Infinity), until: null, duration: 1e3 });
  check("the sentence about returning by itself is shown by the script", o.noteShown);

  // ETA: local time (TZ decides; run with TZ=Europe/Berlin), rounded up, never earlier.
  o = await simulate({ server: maintThen(Infinity), until: T0 + 25 * 60e3 + 20e3, duration: 1e3 });
  check("ETA in 25 min 20 s: local time rounded up, minutes rounded up",
    o.etaAtStart === "back around 14:26, in about 26 minutes", JSON.stringify(o.etaAtStart));
  o = await simulate({ server: maintThen(Infinity), until: T0 + 30 * 60e3, duration: 1e3 });
  check("ETA on the minute stays on it", o.etaAtStart === "back around 14:30, in about 30 minutes", JSON.stringify(o.etaAtStart));
  o = await simulate({ server: maintThen(Infinity), until: T0 + 150 * 60e3, duration: 1e3 });
  check("ETA in hours", o.etaAtStart === "back around 16:30, in about 2 hours 30 minutes", JSON.stringify(o.etaAtStart));
  o = await simulate({ server: maintThen(Infinity), until: T0 + 20 * 3600e3, duration: 1e3 });
  check("ETA tomorrow", o.etaAtStart === "back around 10:00 tomorrow, in about 20 hours", JSON.stringify(o.etaAtStart));
  o = await simulate({ server: maintThen(Infinity), until: T0 + 4 * 86400e3, duration: 1e3 });
  check("ETA days away names the day", /^back around 14:00 on Thu,? 26 Nov, in about 4 days$/.test(o.etaAtStart), JSON.stringify(o.etaAtStart));
  o = await simulate({ server: maintThen(Infinity), until: T0 + 90e3, duration: 5 * 60e3 });
  check("ETA counts down, then 'any moment now' once the end has passed",
    o.etaAtStart === "back around 14:02, in about 2 minutes" && o.eta === "back any moment now", `${JSON.stringify(o.etaAtStart)} -> ${JSON.stringify(o.eta)}`);

  console.log(`page logic: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
