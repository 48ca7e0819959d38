/* The buyer's tickets: each valid ticket's QR code is fetched again when its 15-second step
   ends, with a countdown until then. */
"use strict";

(function () {
  const STEP_S = 15;

  function start(card) {
    const image = card.querySelector('[data-role="qr"]');
    const countdown = card.querySelector('[data-field="countdown"]');
    if (!image || !countdown) return;
    let left = Number(countdown.dataset.secondsLeft) || STEP_S;
    window.setInterval(() => {
      left -= 1;
      if (left <= 0) {
        left = STEP_S;
        image.src = image.src.split("?")[0] + "?at=" + Date.now();
      }
      countdown.textContent = "New code in " + left + " s";
    }, 1000);
  }

  document.querySelectorAll(".entry-ticket").forEach(start);
})();
