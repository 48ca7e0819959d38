/* Shared by every page: the JSON API with the session cookies, sign-out, dates and money. */
"use strict";

(function () {
  const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
  const SYMBOLS = { USD: "$", EUR: "€", GBP: "£", JPY: "¥" };
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
  };
})();
