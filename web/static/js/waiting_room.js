/* A sale's waiting room: joins the queue, shows the place, a progress bar and the estimated
   wait, asks again when the API says to (poll_after_ms), and once admitted opens the purchase
   with the pass, no reload; then the order is followed as on the sale page. */
"use strict";

(function () {
  const F = window.FlashSale;
  const room = document.getElementById("room");
  const productId = room.dataset.productId;
  const message = document.querySelector('[data-role="message"]');
  const buy = document.querySelector('[data-role="buy"]');
  let queuePass = "";
  let firstAhead = null; // how many were ahead at the first answer: the progress bar's 0%
  let ticker = 0; // moves the place on between answers

  function field(name) {
    return document.querySelector('[data-field="' + name + '"]');
  }

  function minutes(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 60) return "about " + Math.max(1, seconds) + " seconds";
    return "about " + Math.round(seconds / 60) + " minutes";
  }

  function show(place) {
    const progress = field("progress");
    window.clearInterval(ticker);
    switch (place.status) {
      case "waiting":
        field("place").textContent = "You are in. Places are drawn at random when the sale opens.";
        field("wait").textContent = "";
        return;
      case "sold_out":
        field("place").textContent = "Sold out before your turn came. Sorry.";
        field("wait").textContent = "";
        progress.value = 0;
        return;
      case "admitted":
        field("place").textContent = "It's your turn: buy below.";
        field("wait").textContent = "";
        progress.value = 100;
        progress.textContent = "100%";
        return;
      default: {
        if (firstAhead === null) firstAhead = Math.max(1, place.ahead);
        // The API is asked again only when the turn should come: in between, the page moves
        // the place on by itself at the room's pace (ahead + 1 places in estimated_wait_s).
        const asked = Date.now();
        const pace = place.estimated_wait_s ? (place.ahead + 1) / place.estimated_wait_s : 0;
        const draw = () => {
          const elapsed = (Date.now() - asked) / 1000;
          const ahead = Math.max(0, Math.round(place.ahead - pace * elapsed));
          const done = Math.round(100 * (1 - Math.min(ahead, firstAhead) / firstAhead));
          progress.value = done;
          progress.textContent = done + "%";
          field("place").textContent =
            "Place " + place.position + ": " + ahead + (ahead === 1 ? " buyer" : " buyers") + " ahead of you.";
          const left = place.estimated_wait_s ? Math.max(1, Math.round(place.estimated_wait_s - elapsed)) : 0;
          field("wait").textContent = left ? "Estimated wait: " + minutes(left) + "." : "";
        };
        draw();
        ticker = window.setInterval(draw, 1000);
      }
    }
  }

  function problem(answer) {
    if (answer.status === 401) return "Your session has ended. Sign in again to keep your place.";
    if (answer.status === 503) return "The queue is being restored. Trying again…";
    if (answer.status === 0) return "No connection. Trying again…";
    return "Something went wrong: " + ((answer.body && answer.body.message) || "error " + answer.status) + ".";
  }

  async function wait() {
    let answer = await F.api("POST", "/queue/" + productId + "/join");
    for (;;) {
      if (answer.ok) {
        F.say(message, "", null);
        show(answer.body);
        if (answer.body.status === "admitted") return admitted(answer.body.queue_pass);
        if (answer.body.status === "sold_out") return;
      } else {
        F.say(message, problem(answer), "error");
        if (answer.status === 401) return;
      }
      const delay = answer.ok ? Number(answer.body.poll_after_ms) || 1000 : 2000;
      await F.sleep(delay);
      answer = await F.api("GET", "/queue/" + productId + "/status");
      if (answer.status === 404) answer = await F.api("POST", "/queue/" + productId + "/join");
    }
  }

  function admitted(pass) {
    queuePass = pass;
    buy.hidden = false;
    document.getElementById("room-quantity").focus();
  }

  function refusal(answer) {
    const body = answer.body || {};
    switch (body.error) {
      case "sold_out":
        return body.remaining > 0 ? "Only " + body.remaining + " left: lower the quantity." : "Sold out. Sorry.";
      case "per_user_limit":
        return "That is over the limit per buyer.";
      case "queue_pass_invalid":
        return "Your pass has been used or has expired: join the queue again.";
      case "queue_pass_required":
        return "This sale needs a pass from its queue.";
      default:
        return problem(answer);
    }
  }

  function describe(order) {
    const name = room.dataset.name;
    switch (order.status) {
      case "confirmed":
        return "Confirmed: " + order.quantity + " × " + name + ".";
      case "failed":
        return "The payment failed. The units went back on sale.";
      case "expired":
        return "The hold expired before the payment went through.";
      default:
        return "Your order is " + order.status + "…";
    }
  }

  async function purchase(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button");
    button.disabled = true;
    const answer = await F.api(
      "POST",
      "/purchase/" + productId,
      { quantity: Number(form.elements.quantity.value), payment_method: form.elements.payment_method.value },
      { "X-Queue-Pass": queuePass, "Idempotency-Key": F.randomKey() }
    );
    button.disabled = false;
    if (answer.status !== 202) {
      F.say(message, refusal(answer), "error");
      return;
    }
    F.say(message, "", null);
    const panel = buy.querySelector('[data-role="ticket"]');
    F.showTicket(panel, answer.body, describe(answer.body), true);
    F.follow(
      answer.body.ticket_id,
      answer.body.status_url,
      (order) => F.showTicket(panel, order, describe(order), false),
      () => true,
      (text) => F.say(message, text, "info")
    );
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("room-buy").addEventListener("submit", purchase);
    wait();
  });
})();
