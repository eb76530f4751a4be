// balllink review: the little the pages need (no framework, nothing fetched elsewhere).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // pair view: opacity of B aligned over A, and the cell outlines on or off
  const slider = document.getElementById("opacity");
  const over = document.getElementById("over");
  if (slider && over) {
    const apply = () => { over.style.opacity = String(slider.value / 100); };
    slider.addEventListener("input", apply);
    apply();
  }
  const toggle = document.getElementById("show-cells");
  const cells = document.getElementById("cells");
  if (toggle && cells) {
    toggle.addEventListener("change", () => cells.classList.toggle("hidden", !toggle.checked));
  }
  // a status change is a decision: ask once
  const form = document.getElementById("status-form");
  if (form) {
    form.addEventListener("submit", (ev) => {
      const s = document.getElementById("status").value;
      if (s !== "new" && !window.confirm(`Mark this lead ${s}? It is recorded in the audit trail under your name.`)) {
        ev.preventDefault();
      }
    });
  }
});
