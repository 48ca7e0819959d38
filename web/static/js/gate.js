/* The gate: a code typed, pasted or read by the camera (BarcodeDetector, where the browser has
   it) is checked with POST /gate/scan for the event typed in (the gate's event); the answer is
   shown big, green or red. */
"use strict";

(function () {
  const F = window.FlashSale;
  const form = document.getElementById("scan");
  const answer = document.querySelector('[data-field="answer"]');
  const camera = document.querySelector('[data-role="camera"]');
  const SAID = {
    admitted: "Admitted",
    already_used: "Already used",
    expired_code: "Code expired: ask for the live code",
    invalid_code: "Not a valid ticket",
    void: "Ticket void",
    wrong_event: "Ticket for another event",
  };

  function show(result, detail) {
    answer.dataset.result = result;
    answer.className = "gate-answer " + (result === "admitted" ? "gate-ok" : "gate-refused");
    answer.textContent = (SAID[result] || result) + (detail ? " · " + detail : "");
  }

  async function check(code) {
    const eventId = form.elements.event_id.value;
    if (!eventId) {
      show("error", "enter the event this gate admits to");
      form.elements.event_id.focus();
      return;
    }
    const body = { code: code.trim(), event_id: Number(eventId) };
    const reply = await F.api("POST", "/gate/scan", body);
    if (!reply.ok) {
      show("error", (reply.body && reply.body.message) || "error " + reply.status);
      return;
    }
    const r = reply.body;
    let detail = r.seat ? "seat " + r.seat : "";
    if (r.result === "already_used" && r.used_at) {
      detail = "at " + new Date(r.used_at).toLocaleTimeString() + " by gate " + r.used_gate_id;
    }
    show(r.result, detail);
    form.elements.code.value = "";
    form.elements.code.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (form.elements.code.value.trim()) check(form.elements.code.value);
  });

  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    camera.hidden = false;
    camera.addEventListener("click", async () => {
      const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
      const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      const video = document.createElement("video");
      video.srcObject = stream;
      await video.play();
      for (;;) {
        const found = await detector.detect(video);
        if (found.length) {
          stream.getTracks().forEach((track) => track.stop());
          return check(found[0].rawValue);
        }
        await F.sleep(200);
      }
    });
  }
  form.elements.code.focus();
})();
