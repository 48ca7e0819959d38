/* My orders: orders that are not final yet are followed until they are. */
"use strict";

(function () {
  const F = window.FlashSale;
  const FINAL = new Set(["confirmed", "failed", "expired", "cancelled", "refunded"]);

  async function followRow(row) {
    let delay = 1000;
    for (;;) {
      await F.sleep(delay);
      const answer = await F.api("GET", "/orders/" + encodeURIComponent(row.dataset.ticket));
      if (!answer.ok) {
        if (answer.status === 401 || answer.status === 404) return;
        delay = Math.min(10000, delay * 2);
        continue;
      }
      const status = answer.body.status;
      const cell = row.querySelector('[data-field="status"]');
      cell.textContent = status;
      cell.className = "status status-" + status;
      if (FINAL.has(status)) {
        row.dataset.final = "true";
        return;
      }
      delay = Number(answer.body.poll_after_ms) || 1000;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const row of document.querySelectorAll('tr[data-ticket][data-final="false"]')) followRow(row);
  });
})();
