<script>
/* maint: shows the window's end in the visitor's local time and returns the visitor to the
   site as soon as it is back, with a GET of the same URL (a POST is never sent again).
   Injected before </body> of every page, built-in or custom: it finds what it changes by
   data attributes only ([data-maint-eta], [data-maint-script]). */
(function () {
  "use strict";
  var until = UNTIL_MS;            /* the window's end in ms since the epoch, or null */
  var waitPath = WAIT_PATH;        /* held by the maintenance server until maintenance ends */
  var HOLD_MAX = 70000;            /* give up on a held request the server never answers */
  var MIN_GAP = 30000;             /* "still on" answers never start more than 2 holds a minute */
  var BACKOFF_MAX = 30000;         /* between checks while neither maint nor the site answers */
  var d = document, w = window;
  var fails = 0, busy = false, parked = false, leaving = false, timer = 0, gen = 0, ctl = null, chan = null;

  function each(sel, f) { Array.prototype.forEach.call(d.querySelectorAll(sel), f); }

  /* ---- The window's end, local time, rounded up: never earlier than Retry-After. ---- */
  function clock(t) {
    try { return t.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" }); }
    catch (e) { return ("0" + t.getHours()).slice(-2) + ":" + ("0" + t.getMinutes()).slice(-2); }
  }
  function day(t) {
    try { return t.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" }); }
    catch (e) { return t.toDateString(); }
  }
  function n(k, word) { return k + " " + word + (k === 1 ? "" : "s"); }
  function strong(text) {
    var s = d.createElement("strong");
    s.style.whiteSpace = "nowrap";
    s.textContent = text;
    return s;
  }
  function eta() {
    var now = Date.now(), left = Math.ceil((until - now) / 60000);
    var end = new Date(Math.ceil(until / 60000) * 60000);
    var tomorrow = new Date(now + 864e5).toDateString(), parts;
    if (left <= 0) {
      parts = ["back any moment now"];
    } else {
      parts = ["back around ", strong(clock(end))];
      if (end.toDateString() === tomorrow) parts.push(" tomorrow");
      else if (end.toDateString() !== new Date(now).toDateString()) parts.push(" on ", strong(day(end)));
      parts.push(", in about " + (left < 60 ? n(left, "minute")
        : left < 2880 ? n(Math.floor(left / 60), "hour") + (left % 60 ? " " + n(left % 60, "minute") : "")
        : n(Math.ceil(left / 1440), "day")));
    }
    each("[data-maint-eta]", function (e) {
      e.textContent = "";
      parts.forEach(function (p) { e.appendChild(typeof p === "string" ? d.createTextNode(p) : p.cloneNode(true)); });
    });
    if (left > 0) setTimeout(eta, 15000);
  }
  if (typeof until === "number" && isFinite(until)) eta();

  /* ---- Returning: hold the wait request; when it ends other than "still on", check the
     page's own URL and go back with a GET only when the site itself answers. ---- */
  if (!w.fetch) return;
  each("[data-maint-script]", function (e) { e.hidden = false; });

  function marker(r) { return (r.headers.get("x-maintenance") || "").toLowerCase(); }
  function schedule(f, ms) { clearTimeout(timer); timer = setTimeout(f, ms); }

  function request(url, accept, done) {
    var g = gen, t = 0, opts = { method: "GET", cache: "no-store", credentials: "same-origin",
                                 redirect: "manual", headers: { Accept: accept } };
    if (w.AbortController) {
      var c = ctl = new AbortController();
      opts.signal = c.signal;
      t = setTimeout(function () { c.abort(); }, HOLD_MAX);
    }
    busy = true;
    fetch(url, opts).then(function (r) {
      clearTimeout(t);
      if (r.body && r.body.cancel) r.body.cancel().catch(function () {});
      if (g === gen) { busy = false; done(r); }
    }, function () {
      clearTimeout(t);
      if (g === gen) { busy = false; done(null); }
    });
  }

  function restart() {                            /* drop what is in flight and start over */
    gen++;
    if (ctl) try { ctl.abort(); } catch (e) {}
    busy = parked = false;
    clearTimeout(timer);
  }

  function hold() {
    if (busy || leaving) return;
    clearTimeout(timer);
    if (d.hidden) { parked = true; return; }      /* a hidden tab waits until it is looked at */
    var start = Date.now();
    request(waitPath, "*/*", function (r) {
      if (r && marker(r) === "on") {               /* maintenance goes on: hold again */
        fails = 0;
        schedule(hold, Math.max(0, start + MIN_GAP - Date.now()));
      } else {
        check();
      }
    });
  }

  function check() {
    if (busy || leaving) return;
    clearTimeout(timer);
    request(location.href, "text/html", function (r) {
      if (r && (r.type === "opaqueredirect" || (r.status < 500 && !marker(r)))) back();
      else schedule(hold, Math.min(1000 * Math.pow(2, fails++), BACKOFF_MAX));
    });
  }

  function back() {
    leaving = true;
    if (chan) try { chan.postMessage("back"); } catch (e) {}
    var href = location.href, i = href.indexOf("#");
    if (i >= 0) {
      /* To the same URL with a fragment, replace() would only scroll: step the URL aside. */
      var base = href.slice(0, i);
      try { history.replaceState(history.state, "", base + (base.indexOf("?") < 0 ? "?" : "&")); }
      catch (e) { href = base; }
    }
    location.replace(href);
    setTimeout(function () { leaving = false; hold(); }, 60000);   /* had it not navigated */
  }

  d.addEventListener("visibilitychange", function () {
    if (!d.hidden && parked) { parked = false; hold(); }
  });
  w.addEventListener("online", function () { if (!busy) { fails = 0; hold(); } });
  w.addEventListener("pageshow", function (e) {
    if (e.persisted) { restart(); leaving = false; fails = 0; hold(); }
  });
  if (w.BroadcastChannel) {                        /* another tab of this site went back */
    try {
      chan = new BroadcastChannel("x-maintenance");
      chan.onmessage = function (e) { if (e.data === "back" && !leaving) { restart(); check(); } };
    } catch (e) { chan = null; }
  }
  hold();
})();
</script>
