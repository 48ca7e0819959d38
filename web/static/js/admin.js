/* Operations page: live inventory figures, queue depths, reconciliation and sales charts. */
"use strict";

(function () {
  const F = window.FlashSale;
  const REFRESH_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  let current = null;
  let reconcileAskedAt = null;
  let previousReconcile = null;

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function show(value) {
    return value === null || value === undefined ? "–" : String(value);
  }

  function setText(element, text) {
    if (element && element.textContent !== text) element.textContent = text;
  }

  /* --- figures ----------------------------------------------------------------------------- */

  function render(data) {
    current = data;
    const table = document.querySelector("table.inventory");
    const ids = data.products.map((p) => p.id).join(",");
    if (table.dataset.productIds !== ids) {
      window.location.reload(); // products were added or removed: render the page again
      return;
    }
    const queue = data.queue || {};
    for (const name of ["queued", "started", "scheduled", "workers", "failed"]) {
      setText(field(document.querySelector('[data-role="queue"]'), name), show(queue[name]));
    }
    document.querySelector('[data-role="failed-tile"]').classList.toggle("alert", Boolean(queue.failed));
    for (const product of data.products) {
      const row = table.querySelector('tr[data-product-id="' + product.id + '"]');
      for (const name of ["initial", "available", "held", "sold", "sold_in_db", "settle_backlog"]) {
        setText(field(row, name), show(product[name]));
      }
      const agree = field(row, "agree");
      setText(agree, "");
      const badge = document.createElement("span");
      badge.className = "status " + (product.agree ? "status-confirmed" : "status-failed");
      badge.textContent = product.agree ? "yes" : "no";
      badge.title = disagreement(product);
      agree.append(badge);
      setText(field(row, "reconcile"), product.reconcile ? product.reconcile.result : "–");
      const room = product.room;
      setText(field(row, "room"), room ? room.waiting + " waiting · " + room.admitted + " admitted · " + room.rate + "/s" : "–");
    }
    const updated = field(document, "updated");
    setText(updated, "Figures as of " + F.localTime(data.generated_at) + "; they refresh every two seconds.");
    renderReconcile(data);
    drawCharts(data);
  }

  function disagreement(product) {
    if (!product.in_redis) return "the stock is not in Redis";
    const problems = [];
    if (!product.balanced) problems.push("available + held + sold is not the initial stock");
    if (!product.initial_matches) problems.push("Redis' initial stock differs from the database's");
    const expected = product.sold_in_db + product.sold_pending_in_db;
    if (product.sold !== expected) problems.push("sold " + product.sold + " but the database accounts for " + expected);
    return problems.length ? problems.join("; ") : "Redis and the database agree";
  }

  function renderReconcile(data) {
    const results = data.products.filter((p) => p.reconcile).map((p) => p.reconcile.result);
    const counts = {};
    for (const result of results) counts[result] = (counts[result] || 0) + 1;
    const summary = Object.keys(counts).map((k) => counts[k] + " " + k).join(", ");
    const text = data.last_reconcile_at
      ? "Last run " + F.localTime(data.last_reconcile_at) + (summary ? ": " + summary + "." : ".")
      : "No reconciliation has run yet.";
    setText(field(document, "reconcile-summary"), text);
    if (reconcileAskedAt && data.last_reconcile_at && data.last_reconcile_at !== previousReconcile) {
      reconcileAskedAt = null;
      F.say(field(document, "reconcile-message"), "Reconciliation finished: " + (summary || "no products") + ".", "success");
      document.getElementById("run-reconcile").disabled = false;
    }
  }

  async function runReconcile(event) {
    const button = event.currentTarget;
    const message = field(document, "reconcile-message");
    button.disabled = true;
    previousReconcile = current ? current.last_reconcile_at : null;
    F.say(message, "Queuing a reconciliation…", "info");
    const answer = await F.api("POST", "/admin/reconcile");
    if (answer.status === 202) {
      reconcileAskedAt = Date.now();
      F.say(message, "Reconciliation queued as job " + answer.body.job_id + "; waiting for a worker…", "info");
      setTimeout(function () {
        if (reconcileAskedAt) {
          reconcileAskedAt = null;
          button.disabled = false;
          F.say(message, "The reconciliation has not finished yet: is a worker running?", "error");
        }
      }, 60000);
    } else {
      button.disabled = false;
      F.say(message, "Could not queue a reconciliation: " + (answer.body.message || "error " + answer.status) + ".", "error");
    }
  }

  async function refresh() {
    if (document.visibilityState !== "hidden") {
      const answer = await F.api("GET", "/admin/overview");
      if (answer.ok) render(answer.body);
      else if (answer.status === 401 || answer.status === 403) {
        F.say(field(document, "updated"), "Your session has ended: sign in again to see live figures.", "error");
        return;
      }
    }
    setTimeout(refresh, REFRESH_MS);
  }

  /* --- charts ------------------------------------------------------------------------------ */

  function node(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const key of Object.keys(attributes)) element.setAttribute(key, String(attributes[key]));
    if (parent) parent.append(element);
    return element;
  }

  function stepPath(points, x, y, index) {
    let path = "";
    let lastY = null;
    for (const point of points) {
      const px = x(point[0]).toFixed(1);
      const py = y(point[index]).toFixed(1);
      path += path ? " L" + px + " " + lastY + " L" + px + " " + py : "M" + px + " " + py;
      lastY = py;
    }
    return path;
  }

  function shortTime(ms) {
    return new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function drawChart(area, product) {
    const points = product.sales || [];
    const width = Math.max(240, area.clientWidth || 480);
    const height = 170;
    const pad = { left: 40, right: 12, top: 12, bottom: 26 };
    area.textContent = "";
    if (points.length < 2) {
      const empty = document.createElement("p");
      empty.className = "hint";
      empty.textContent = product.in_redis ? "No stock movements yet." : "No figures: the stock is not in Redis.";
      area.append(empty);
      return;
    }
    const t0 = points[0][0];
    const t1 = Math.max(points[points.length - 1][0], t0 + 1000);
    const top = Math.max(1, product.initial || 0, ...points.map((p) => p[1] + p[2]));
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => pad.top + (1 - v / top) * (height - pad.top - pad.bottom);
    const last = points[points.length - 1];
    const svg = node("svg", {
      width: width,
      height: height,
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-label":
        "Sales of " + product.name + " from " + shortTime(t0) + " to " + shortTime(t1) + ": " +
        last[1] + " sold, " + last[2] + " held now, out of " + (product.initial || 0) + ".",
      class: "sales-chart",
    });
    for (const value of [0, top / 2, top]) {
      node("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: "grid" }, svg);
      const label = node("text", { x: pad.left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" }, svg);
      label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
    }
    const start = node("text", { x: pad.left, y: height - 8, "text-anchor": "start", class: "axis" }, svg);
    start.textContent = shortTime(t0);
    const end = node("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "axis" }, svg);
    end.textContent = shortTime(t1);
    node("path", { d: stepPath(points, x, y, 2), class: "line-held" }, svg);
    node("path", { d: stepPath(points, x, y, 1), class: "line-sold" }, svg);
    node("circle", { cx: x(last[0]), cy: y(last[1]), r: 3.5, class: "dot-sold" }, svg);
    const legend = node("text", { x: width - pad.right, y: pad.top + 10, "text-anchor": "end", class: "legend" }, svg);
    legend.textContent = last[1] + " sold · " + last[2] + " held";
    area.append(svg);
  }

  /* Places admitted over time: a waiting room's inlet, one step a place. */
  function drawRoomChart(area, product) {
    const points = (product.room && product.room.admissions) || [];
    area.textContent = "";
    if (points.length < 2) {
      const empty = document.createElement("p");
      empty.className = "hint";
      empty.textContent = "Waiting room: nobody admitted yet.";
      area.append(empty);
      return;
    }
    const width = Math.max(240, area.clientWidth || 480);
    const height = 120;
    const pad = { left: 40, right: 12, top: 12, bottom: 26 };
    const t0 = points[0][0];
    const t1 = Math.max(points[points.length - 1][0], t0 + 1000);
    const low = points[0][1];
    const top = Math.max(low + 1, points[points.length - 1][1]);
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (v) => pad.top + (1 - (v - low) / (top - low)) * (height - pad.top - pad.bottom);
    const rate = ((top - low) / ((t1 - t0) / 1000)).toFixed(1);
    const svg = node("svg", {
      width: width,
      height: height,
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-label": "Waiting room of " + product.name + ": places " + low + " to " + top + " admitted, " + rate + " a second.",
      class: "sales-chart room-chart",
    });
    node("path", { d: stepPath(points, x, y, 1), class: "line-sold" }, svg);
    const legend = node("text", { x: width - pad.right, y: pad.top + 10, "text-anchor": "end", class: "legend" }, svg);
    legend.textContent = "admitted up to place " + top + " · " + rate + "/s";
    const start = node("text", { x: pad.left, y: height - 8, "text-anchor": "start", class: "axis" }, svg);
    start.textContent = shortTime(t0);
    const end = node("text", { x: width - pad.right, y: height - 8, "text-anchor": "end", class: "axis" }, svg);
    end.textContent = shortTime(t1);
    area.append(svg);
  }

  function drawCharts(data) {
    for (const product of data.products) {
      const figure = document.querySelector('[data-chart-for="' + product.id + '"]');
      if (!figure) continue;
      drawChart(figure.querySelector('[data-role="chart"]'), product);
      const roomArea = figure.querySelector('[data-role="room-chart"]');
      if (roomArea) drawRoomChart(roomArea, product);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const initial = document.getElementById("overview-data");
    if (initial) render(JSON.parse(initial.textContent));
    document.getElementById("run-reconcile").addEventListener("click", runReconcile);
    let resizing = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizing);
      resizing = setTimeout(function () {
        if (current) drawCharts(current);
      }, 150);
    });
    setTimeout(refresh, REFRESH_MS);
  });
})();
