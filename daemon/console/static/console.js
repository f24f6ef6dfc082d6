// rosterd admin console: live updates and confirmations. No framework, no build step.
"use strict";

// Buttons with data-confirm ask before their form is sent.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

// Parts marked data-live="URL" are fetched again and replaced when the server says a tenant they show changed
// (data-live-tenant: that tenant, or * for any).
(function live() {
  const parts = document.querySelectorAll("[data-live]");
  if (!parts.length || !window.EventSource) {
    return;
  }
  const status = document.querySelector("[data-live-status]");
  const stream = new EventSource("/events");
  const pending = new Set();
  stream.addEventListener("open", () => status && status.classList.add("on"));
  stream.addEventListener("error", () => status && status.classList.remove("on"));
  stream.addEventListener("changed", (event) => {
    for (const part of parts) {
      const shown = part.dataset.liveTenant;
      if (shown === "*" || shown === event.data) {
        refresh(part);
      }
    }
  });

  function refresh(part) {
    if (pending.has(part)) {
      return;
    }
    pending.add(part);
    setTimeout(async () => {
      pending.delete(part);
      const answer = await fetch(part.dataset.live, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (answer.ok && answer.headers.get("Content-Type").startsWith("text/html") && !answer.redirected) {
        part.innerHTML = await answer.text();
        part.dispatchEvent(new CustomEvent("live-updated", { bubbles: true }));
      }
    }, 200);
  }
})();
