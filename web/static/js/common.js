/* Shared by every page: the JSON API with the session cookies, sign-out, dates and money. */
"use strict";

(function () {
  const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
  const SYMBOLS = { USD: "$", EUR: "€", GBP: "£", JPY: "¥" };
  // A server that does not answer counts as no connection (status 0) after this, not a spinner.
  const REQUEST_TIMEOUT_MS = 10000;
  const serverNow = Number(document.body.dataset.serverNow || Date.now());
  const clockSkew = serverNow - Date.now(); // the server's clock decides when a sale opens

  function cookie(name) {
    const prefix = name + "=";
    for (const part of document.cookie.split(";")) {
      const item = part.trim();
      if (item.startsWith(prefix)) return decodeURIComponent(item.slice(prefix.length));
    }
    return "";
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (_error) {
      return {};
    }
  }

  function send(method, url, body, headers) {
    const all = Object.assign({ Accept: "application/json" }, headers || {});
    if (body !== undefined) all["Content-Type"] = "application/json";
    if (UNSAFE.has(method)) {
      // Double-submit CSRF: the value of a cookie only our own pages can read.
      const token = cookie("_csrf_token") || cookie("csrf_refresh_token");
      if (token) all["X-CSRFToken"] = token;
    }
    return fetch(url, {
      method: method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  }

  async function refreshSession() {
    const token = cookie("csrf_refresh_token");
    if (!token) return false;
    const response = await fetch("/auth/refresh", {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRFToken": token },
      credentials: "same-origin",
    });
    return response.ok;
  }

  /* Calls the API; an expired access cookie is renewed once from the refresh cookie.
     Resolves to {status, ok, body, headers}; a network failure resolves to status 0. */
  async function api(method, url, body, headers) {
    let response;
    try {
      response = await send(method, url, body, headers);
      const renewable = !url.startsWith("/auth/");
      if (response.status === 401 && renewable && cookie("csrf_refresh_token")) {
        if (await refreshSession()) response = await send(method, url, body, headers);
      }
    } catch (_error) {
      return { status: 0, ok: false, body: {}, headers: new Headers() };
    }
    return {
      status: response.status,
      ok: response.ok,
      body: await readJson(response),
      headers: response.headers,
    };
  }

  function money(amount, currency) {
    if (amount === null || amount === undefined) return "";
    const symbol = SYMBOLS[currency];
    return symbol ? symbol + amount : amount + " " + currency;
  }

  function localTime(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return iso || "";
    return when.toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "medium",
    });
  }

  function localizeTimes(root) {
    for (const element of (root || document).querySelectorAll("time[data-local-time]")) {
      element.textContent = localTime(element.getAttribute("datetime"));
    }
  }

  function serverTime() {
    return Date.now() + clockSkew;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function say(element, text, kind) {
    if (!element) return;
    element.textContent = text || "";
    element.classList.remove("error", "success", "info");
    if (text && kind) element.classList.add(kind);
  }

  /* --- a ticket, from its 202 until it is final (the sale page and the seat map) ----------- */

  const FINAL = new Set(["confirmed", "failed", "expired", "cancelled", "refunded"]);
  const STEP_OF = { reserved: 0, processing: 1, requires_action: 1, confirmed: 2 };
  const FIRST_POLL_MS = 1000;

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  /* Shows the order in a ticket panel (see the templates): its steps and the `text` given. */
  function showTicket(panel, order, text, fresh) {
    panel.hidden = false;
    const history = fresh ? [] : (panel.dataset.history || "").split(" ").filter(Boolean);
    if (history[history.length - 1] !== order.status) history.push(order.status);
    panel.dataset.history = history.join(" ");
    panel.dataset.status = order.status;
    field(panel, "ticket-id").textContent = order.ticket_id;
    const stopped = FINAL.has(order.status) && order.status !== "confirmed";
    panel.classList.toggle("stopped", stopped);
    panel.classList.toggle("done", order.status === "confirmed");
    const reached = Math.max(0, ...history.map((status) => (status in STEP_OF ? STEP_OF[status] : 0)));
    const moving = !FINAL.has(order.status);
    panel.querySelectorAll("li[data-step]").forEach(function (step, index) {
      step.classList.toggle("reached", index <= reached);
      step.classList.toggle("current", moving && index === reached);
      step.classList.toggle("skipped", stopped && index > reached);
      if (moving && index === reached) step.setAttribute("aria-current", "step");
      else step.removeAttribute("aria-current");
    });
    const message = field(panel, "ticket-message");
    message.textContent = text;
    message.className = "ticket-message " + (order.status === "confirmed" ? "success" : stopped ? "error" : "info");
    if (order.status === "confirmed") {
      const link = document.createElement("a");
      link.href = "/account/orders";
      link.textContent = "See my orders";
      message.append(" ", link);
    }
  }

  /* Polls the ticket until it is final, as the API asks (poll_after_ms); `onOrder` gets each
     answer, `current()` false stops it (a newer purchase took over), `onProblem` a text. */
  async function follow(ticketId, statusUrl, onOrder, current, onProblem) {
    let delay = FIRST_POLL_MS;
    let failures = 0;
    for (;;) {
      await sleep(delay);
      if (!current()) return;
      const answer = await api("GET", statusUrl || "/orders/" + encodeURIComponent(ticketId));
      if (!current()) return;
      if (answer.ok) {
        failures = 0;
        onOrder(answer.body);
        if (FINAL.has(answer.body.status)) return;
        const retry = Number(answer.headers.get("Retry-After") || 0) * 1000;
        delay = Number(answer.body.poll_after_ms) || retry || FIRST_POLL_MS;
      } else if (answer.status === 401 || answer.status === 404) {
        onProblem(answer.status === 401 ? "Sign in again to follow this order." : "This order is no longer known.");
        return;
      } else {
        failures += 1;
        onProblem("Reconnecting to follow your order…");
        delay = Math.min(10000, 1000 * 2 ** failures);
      }
    }
  }

  function randomKey() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function signOut() {
    await api("DELETE", "/auth/session");
    window.location.assign("/");
  }

  document.addEventListener("DOMContentLoaded", function () {
    const button = document.getElementById("sign-out");
    if (button) button.addEventListener("click", signOut);
    localizeTimes(document);
  });

  window.FlashSale = {
    api: api,
    cookie: cookie,
    money: money,
    localTime: localTime,
    localizeTimes: localizeTimes,
    serverTime: serverTime,
    sleep: sleep,
    say: say,
    FINAL: FINAL,
    showTicket: showTicket,
    follow: follow,
    randomKey: randomKey,
  };
})();
