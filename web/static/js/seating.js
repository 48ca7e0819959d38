/* The seat map: every seat drawn (SVG) and coloured from GET /events/<id>/seats, refreshed
   while the page is visible (an unchanged map answers 304); free seats chosen by a click or
   the best available asked for; then the order followed until it is final. */
"use strict";

(function () {
  const F = window.FlashSale;
  const SVG = "http://www.w3.org/2000/svg";
  const SEAT = 18; // a seat's side, in map units
  const STEP = 22; // from one seat (or row) to the next
  const LABEL = 34; // room left of the rows for their names
  const GAP = 24; // between two sections
  const REFRESH_MS = 2000;

  const show = document.getElementById("show");
  const eventId = show.dataset.eventId;
  const maxSeats = Number(show.dataset.maxSeats);
  const svg = document.querySelector('[data-role="seats"]');
  const mapMessage = document.querySelector('[data-role="map-message"]');
  const message = document.querySelector('[data-role="message"]');
  const panel = document.querySelector('[data-role="ticket"]');
  const chosen = new Set();
  let mine = new Set(); // the seats of the ticket this page follows
  let etag = "";
  let hall = null; // {viewBox, sections: {name: box}}
  let run = 0;

  function signedIn() {
    return document.getElementById("signed-in-user") !== null;
  }

  function node(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    parent.appendChild(element);
    return element;
  }

  function numbersOf(row) {
    if (Array.isArray(row.seats)) return row.seats;
    return Array.from({ length: row.seats }, (_, index) => index + 1);
  }

  /* --- drawing ---------------------------------------------------------------------------- */

  function draw(map) {
    svg.replaceChildren();
    const boxes = {};
    let top = 0;
    let width = 0;
    for (const section of map.sections) {
      const group = node("g", { "data-section": section.name }, svg);
      node("text", { x: 0, y: top + 14, class: "section-name" }, group).textContent =
        "Section " + section.name + " · " + F.money(section.price, show.dataset.currency);
      const first = top;
      top += 24;
      for (const row of section.rows) {
        node("text", { x: 0, y: top + 13, class: "row-name" }, group).textContent = row.name;
        numbersOf(row).forEach(function (number, index) {
          const id = section.name + "-" + row.name + "-" + number;
          const x = LABEL + (number - 1) * STEP;
          width = Math.max(width, x + STEP);
          const seat = node("rect", { x: x, y: top, width: SEAT, height: SEAT, rx: 4, "data-seat": id }, group);
          seat.dataset.state = row.states[index];
          node("title", {}, seat).textContent = id;
        });
        top += STEP;
      }
      boxes[section.name] = [0, first, 0, top - first];
      top += GAP;
    }
    for (const box of Object.values(boxes)) box[2] = width;
    hall = { viewBox: [0, 0, width, Math.max(STEP, top - GAP)], sections: boxes };
    zoom("");
    paint();
    zoomButtons(map.sections.map((section) => section.name));
  }

  function update(map) {
    for (const section of map.sections) {
      for (const row of section.rows) {
        numbersOf(row).forEach(function (number, index) {
          const seat = svg.querySelector('[data-seat="' + section.name + "-" + row.name + "-" + number + '"]');
          if (seat) seat.dataset.state = row.states[index];
        });
      }
    }
    for (const id of Array.from(chosen)) {
      const seat = svg.querySelector('[data-seat="' + id + '"]');
      if (!seat || seat.dataset.state !== "f") chosen.delete(id); // taken meanwhile
    }
    paint();
  }

  function paint() {
    let free = 0;
    for (const seat of svg.querySelectorAll("rect[data-seat]")) {
      const id = seat.dataset.seat;
      const state = seat.dataset.state;
      if (state === "f") free += 1;
      seat.setAttribute("class", "seat seat-" + state + (chosen.has(id) ? " selected" : "") + (mine.has(id) ? " mine" : ""));
    }
    F.say(mapMessage, free + (free === 1 ? " seat is free." : " seats are free."), null);
    showChoice();
  }

  /* --- zoom --------------------------------------------------------------------------------- */

  /* The whole hall (shrunk to fit the page when large), or one section larger still:
     on a phone its seats become big enough to tap, and the map scrolls. */
  function zoom(section) {
    const zoomed = Boolean(section && hall.sections[section]);
    const box = zoomed ? hall.sections[section] : hall.viewBox;
    const scale = zoomed ? 2.5 : 1.5;
    svg.setAttribute("viewBox", box.join(" "));
    svg.setAttribute("width", box[2] * scale);
    svg.setAttribute("height", box[3] * scale);
    svg.dataset.zoom = zoomed ? section : "";
  }

  function zoomButtons(names) {
    const group = document.querySelector('[data-role="zoom"]');
    for (const old of group.querySelectorAll("[data-zoom]:not([data-zoom=''])")) old.remove();
    for (const name of names) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button secondary small";
      button.dataset.zoom = name;
      button.textContent = "Section " + name;
      group.appendChild(button);
    }
  }

  /* --- the seats' states ----------------------------------------------------------------------- */

  async function refresh() {
    if (document.visibilityState === "hidden" && hall) return;
    const answer = await F.api("GET", "/events/" + eventId + "/seats", undefined, etag ? { "If-None-Match": etag } : {});
    if (answer.status === 304) return;
    if (!answer.ok) {
      F.say(mapMessage, "The seats cannot be shown right now; retrying…", "error");
      return;
    }
    etag = answer.headers.get("ETag") || "";
    if (hall) update(answer.body);
    else draw(answer.body);
    showStanding(answer.body.standing || []);
  }

  function showStanding(places) {
    const list = document.querySelector('[data-role="standing"]');
    list.replaceChildren();
    for (const place of places) {
      const item = document.createElement("li");
      item.dataset.section = place.name;
      const left = place.available === null ? "–" : String(place.available);
      item.textContent = place.name + " (standing): " + left + " places left";
      list.appendChild(item);
    }
  }

  /* --- choosing and buying ----------------------------------------------------------------- */

  function showChoice() {
    const list = Array.from(chosen).sort();
    const text = document.querySelector('[data-field="selection"]');
    text.textContent = list.length
      ? "Chosen: " + list.join(", ") + "."
      : "No seat chosen yet: click free seats on the map (up to " + maxSeats + ").";
    document.querySelector("#seats-form button").disabled = list.length === 0;
  }

  function toggle(event) {
    const seat = event.target.closest("rect[data-seat]");
    if (!seat || seat.dataset.state !== "f") return;
    const id = seat.dataset.seat;
    if (chosen.has(id)) chosen.delete(id);
    else if (chosen.size >= maxSeats) F.say(message, "At most " + maxSeats + " seats at a time.", "error");
    else chosen.add(id);
    paint();
  }

  function refusal(answer) {
    const body = answer.body || {};
    switch (body.error) {
      case "seats_unavailable":
        return "Taken meanwhile: " + (body.seats || []).join(", ") + ". Choose other seats.";
      case "not_enough_adjacent":
        return "Not that many seats side by side are free in this section.";
      case "not_enough_seats":
      case "sold_out":
        return "Not that many seats are free.";
      case "per_user_limit":
        return "That is over this show's limit per buyer.";
      case "sale_not_started":
        return "The sale has not started yet.";
      case "sale_ended":
        return "The sale has ended.";
      default:
        if (answer.status === 429) return "Too many attempts: wait a moment and try again.";
        if (answer.status === 401) return "Your session has ended. Sign in again to buy.";
        if (answer.status === 503) return "The seats cannot be held right now. Try again shortly.";
        if (answer.status === 0) return "No connection. Check your network and try again.";
        return "Something went wrong: " + (body.message || "error " + answer.status) + ".";
    }
  }

  function ticketText(order) {
    const seats = order.seats ? order.seats.join(", ") : order.quantity + " standing places";
    const amount = F.money(order.amount, order.currency || show.dataset.currency);
    switch (order.status) {
      case "reserved":
        return "Held for you: " + seats + ". The payment starts now.";
      case "processing":
        return "Paying" + (amount ? " " + amount : "") + " for " + seats + "…";
      case "confirmed":
        return "Confirmed: " + seats + (amount ? " for " + amount : "") + ".";
      case "failed":
        return "The payment failed" + (order.failure_reason ? " (" + order.failure_reason + ")" : "") + ". The seats are free again.";
      case "expired":
        return "The hold expired before the payment went through. The seats are free again.";
      default:
        return "Your order is " + order.status + ".";
    }
  }

  async function purchase(body, button) {
    if (!signedIn()) {
      F.say(message, "Sign in first, then choose your seats.", "error");
      return;
    }
    button.disabled = true;
    F.say(message, "Holding your seats…", "info");
    const answer = await F.api("POST", "/events/" + eventId + "/purchase", body, { "Idempotency-Key": F.randomKey() });
    button.disabled = false;
    if (answer.status !== 202) {
      F.say(message, refusal(answer), "error");
      await refresh();
      return;
    }
    F.say(message, "", null);
    chosen.clear();
    mine = new Set(answer.body.seats || []);
    run += 1;
    const current = run;
    F.showTicket(panel, answer.body, ticketText(answer.body), true);
    await refresh();
    F.follow(
      answer.body.ticket_id,
      answer.body.status_url,
      function (order) {
        F.showTicket(panel, order, ticketText(order), false);
        if (F.FINAL.has(order.status)) refresh();
      },
      () => run === current,
      (text) => F.say(message, text, "info")
    );
  }

  function buyChosen(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const seats = Array.from(chosen).sort();
    if (seats.length === 0) return;
    purchase({ seats: seats, payment_method: form.elements.payment_method.value }, form.querySelector("button"));
  }

  function buyBest(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const quantity = Number(form.elements.quantity.value);
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > maxSeats) {
      F.say(message, "Ask for 1 to " + maxSeats + " seats.", "error");
      form.elements.quantity.focus();
      return;
    }
    const body = {
      section: form.elements.section.value,
      quantity: quantity,
      together: form.elements.together.checked,
      payment_method: form.elements.payment_method.value,
    };
    purchase(body, form.querySelector("button"));
  }

  document.addEventListener("DOMContentLoaded", function () {
    svg.addEventListener("click", toggle);
    document.querySelector('[data-role="zoom"]').addEventListener("click", function (event) {
      const button = event.target.closest("[data-zoom]");
      if (button && hall) zoom(button.dataset.zoom);
    });
    document.getElementById("seats-form").addEventListener("submit", buyChosen);
    document.getElementById("best-form").addEventListener("submit", buyBest);
    refresh();
    setInterval(refresh, REFRESH_MS);
    document.addEventListener("visibilitychange", refresh);
  });
})();
