/* The sale page: sign-in and registration, live stock, countdowns, buying and following the
   order until it is final. */
"use strict";

(function () {
  const F = window.FlashSale;
  const STOCK_EVERY_MS = 3000;

  function cards() {
    return Array.from(document.querySelectorAll("li.product[data-product-id]"));
  }

  function signedIn() {
    return document.getElementById("signed-in-user") !== null;
  }

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function role(root, name) {
    return root.querySelector('[data-role="' + name + '"]');
  }

  /* --- countdowns ------------------------------------------------------------------------- */

  function parseTime(iso) {
    const ms = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(ms) ? 0 : ms;
  }

  function duration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const days = Math.floor(total / 86400);
    const clock = [Math.floor((total % 86400) / 3600), Math.floor((total % 3600) / 60), total % 60]
      .map((n) => String(n).padStart(2, "0"))
      .join(":");
    return days > 0 ? days + " d " + clock : clock;
  }

  function saleState(card, now) {
    const starts = parseTime(card.dataset.starts);
    const ends = parseTime(card.dataset.ends);
    if (starts && now < starts) return { state: "upcoming", text: "Sale starts in " + duration(starts - now) };
    if (ends && now >= ends) return { state: "ended", text: "Sale ended" };
    if (ends) return { state: "open", text: "On sale · ends in " + duration(ends - now) };
    return { state: "open", text: "On sale now" };
  }

  function tick() {
    const now = F.serverTime();
    for (const card of cards()) {
      const sale = saleState(card, now);
      field(card, "countdown").textContent = sale.text;
      card.dataset.sale = sale.state;
      const button = card.querySelector("button.buy");
      if (!button) continue; // a sale with a waiting room is bought from its queue's page
      if (!card.dataset.busy) button.disabled = sale.state !== "open";
      button.textContent = sale.state === "upcoming" ? "Not on sale yet" : sale.state === "ended" ? "Sale ended" : "Buy now";
    }
  }

  /* --- live stock ------------------------------------------------------------------------- */

  function setAvailable(card, available) {
    if (available === null || available === undefined) return;
    card.dataset.available = String(available);
    field(card, "available").textContent = String(available);
    field(card, "stock-meter").value = available;
    card.querySelector(".sold-out-badge").hidden = available !== 0;
    card.classList.toggle("sold-out", available === 0);
  }

  async function refreshStock() {
    if (document.visibilityState === "hidden") return;
    const answer = await F.api("GET", "/products");
    if (!answer.ok) return;
    for (const product of answer.body.products || []) {
      const card = document.getElementById("product-" + product.id);
      if (card) setAvailable(card, product.available);
    }
  }

  /* --- sign-in and registration ------------------------------------------------------------ */

  function afterSignIn() {
    const account = document.getElementById("account");
    const next = account ? account.dataset.next : "";
    window.location.assign(next || "/");
  }

  function credentials(form) {
    return { username: form.elements.username.value.trim(), password: form.elements.password.value };
  }

  function retryText(answer) {
    const seconds = Number(answer.headers.get("Retry-After") || 0);
    return seconds > 0 ? " Try again in " + seconds + " seconds." : " Try again shortly.";
  }

  function firstInvalid(form) {
    for (const input of form.querySelectorAll("input")) {
      if (!input.checkValidity()) return input;
    }
    return null;
  }

  function invalidText(input) {
    const label = input.labels && input.labels[0] ? input.labels[0].textContent : input.name;
    const hint = input.getAttribute("aria-describedby");
    const hintText = hint ? " " + document.getElementById(hint).textContent : "";
    if (input.validity.valueMissing) return label + ": this field is required.";
    return label + ": " + input.validationMessage + hintText;
  }

  // Says what is wrong with the form's first invalid field and focuses it; false if none is.
  function refuseInvalid(form, message) {
    const invalid = firstInvalid(form);
    if (!invalid) return false;
    F.say(message, invalidText(invalid), "error");
    invalid.focus();
    return true;
  }

  async function signIn(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const message = role(form, "message");
    if (refuseInvalid(form, message)) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    F.say(message, "Signing in…", "info");
    const answer = await F.api("POST", "/auth/session", credentials(form));
    button.disabled = false;
    if (answer.ok) {
      F.say(message, "Signed in.", "success");
      afterSignIn();
    } else if (answer.status === 401) {
      F.say(message, "Wrong username or password.", "error");
      form.elements.password.focus();
    } else if (answer.status === 429) {
      F.say(message, "Too many sign-in attempts." + retryText(answer), "error");
    } else {
      F.say(message, errorText(answer), "error");
    }
  }

  async function register(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const message = role(form, "message");
    if (refuseInvalid(form, message)) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    F.say(message, "Creating your account…", "info");
    const body = credentials(form);
    const created = await F.api("POST", "/auth/register", body);
    if (created.status === 201) {
      const session = await F.api("POST", "/auth/session", body);
      button.disabled = false;
      if (session.ok) {
        F.say(message, "Account created. You are signed in.", "success");
        afterSignIn();
      } else {
        F.say(message, "Account created. Sign in with it on the left.", "success");
      }
      return;
    }
    button.disabled = false;
    if (created.status === 409) {
      F.say(message, "That username is taken: choose another.", "error");
      form.elements.username.focus();
    } else {
      F.say(message, errorText(created), "error");
    }
  }

  /* --- buying ------------------------------------------------------------------------------ */

  function errorText(answer) {
    if (answer.status === 0) return "No connection to the shop. Check your network and try again.";
    const body = answer.body || {};
    if (answer.status === 400 && body.message) return "Check the form: " + body.message;
    if (answer.status === 503) return "The shop cannot take purchases right now. Try again shortly.";
    if (body.message) return "Something went wrong: " + body.message + ".";
    return "Something went wrong (error " + answer.status + "). Try again.";
  }

  function refusalText(card, answer) {
    const body = answer.body || {};
    const limit = Number(card.dataset.maxPerUser || 0);
    switch (body.error) {
      case "sold_out":
        if (body.remaining > 0) {
          return "Only " + body.remaining + " left: lower the quantity to buy.";
        }
        return "Sold out. Units held by other buyers come back on sale if their payment fails.";
      case "per_user_limit":
        if (body.remaining > 0) {
          return "The limit is " + limit + " per buyer: you can buy " + body.remaining + " more.";
        }
        return "Limit reached: you already have the " + limit + " per buyer this sale allows.";
      case "sale_not_started":
        return "The sale has not started yet.";
      case "sale_ended":
        return "The sale has ended.";
      default:
        return errorText(answer);
    }
  }

  function purchaseFailure(card, answer) {
    if (answer.status === 409) return refusalText(card, answer);
    if (answer.status === 429) return "Too many purchase attempts: you are rate-limited." + retryText(answer);
    if (answer.status === 401) return "Your session has ended. Sign in again to buy.";
    return errorText(answer);
  }

  async function buy(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const card = form.closest("li.product");
    const message = role(form, "message");
    if (!signedIn()) {
      F.say(message, "Sign in or create an account first, then buy.", "error");
      const username = document.getElementById("sign-in-username");
      if (username) username.focus();
      return;
    }
    const quantityInput = form.elements.quantity;
    const quantity = Number(quantityInput.value);
    const max = Number(quantityInput.max);
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > max) {
      F.say(message, "Choose a quantity from 1 to " + max + ".", "error");
      quantityInput.focus();
      return;
    }
    const button = form.querySelector("button.buy");
    card.dataset.busy = "1";
    button.disabled = true;
    F.say(message, "Reserving…", "info");
    const answer = await F.api(
      "POST",
      "/purchase/" + card.dataset.productId,
      { quantity: quantity, payment_method: form.elements.payment_method.value },
      { "Idempotency-Key": F.randomKey() }
    );
    delete card.dataset.busy;
    tick();
    if (answer.status === 202) {
      F.say(message, "", null);
      const ticket = answer.body;
      const run = (Number(card.dataset.run || 0) + 1).toString();
      card.dataset.run = run;
      showTicket(card, ticket, true);
      follow(card, ticket.ticket_id, ticket.status_url, run);
      refreshStock();
    } else {
      F.say(message, purchaseFailure(card, answer), "error");
      if (answer.body && answer.body.error === "sold_out" && !answer.body.remaining) setAvailable(card, 0);
    }
  }

  function ticketText(card, order) {
    const name = card.dataset.name;
    const amount = F.money(order.amount, order.currency || card.dataset.currency);
    switch (order.status) {
      case "reserved":
        return "Reserved: " + order.quantity + " × " + name + " is held for you while the payment starts.";
      case "processing":
        return "Paying" + (amount ? " " + amount : "") + "…";
      case "requires_action":
        return "Your bank asks you to confirm this payment (3-D Secure) before the hold ends.";
      case "confirmed":
        return "Confirmed: " + order.quantity + " × " + name + (amount ? " for " + amount : "") + ".";
      case "failed":
        return "The payment failed" + (order.failure_reason ? " (" + order.failure_reason + ")" : "") + ". The units went back on sale.";
      case "expired":
        return "The hold expired before the payment went through. The units went back on sale.";
      case "cancelled":
        return "The order was cancelled.";
      case "refunded":
        return "The order was refunded.";
      default:
        return "Status: " + order.status;
    }
  }

  function showTicket(card, order, fresh) {
    F.showTicket(role(card, "ticket"), order, ticketText(card, order), fresh);
  }

  function follow(card, ticketId, statusUrl, run) {
    F.follow(
      ticketId,
      statusUrl,
      function (order) {
        showTicket(card, order, false);
        if (F.FINAL.has(order.status)) refreshStock();
      },
      () => card.dataset.run === run,
      (text) => {
        field(role(card, "ticket"), "ticket-message").textContent = text;
      }
    );
  }

  document.addEventListener("DOMContentLoaded", function () {
    const signInForm = document.getElementById("sign-in-form");
    if (signInForm) signInForm.addEventListener("submit", signIn);
    const registerForm = document.getElementById("register-form");
    if (registerForm) registerForm.addEventListener("submit", register);
    for (const form of document.querySelectorAll("form.buy-form")) form.addEventListener("submit", buy);
    tick();
    setInterval(tick, 1000);
    setInterval(refreshStock, STOCK_EVERY_MS);
    document.addEventListener("visibilitychange", refreshStock);
    if (window.location.hash === "#account" && document.getElementById("sign-in-username")) {
      document.getElementById("sign-in-username").focus();
    }
  });
})();
