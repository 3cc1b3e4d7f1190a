// Keyboard shortcuts and the compare view's flicker/difference toggles. The page is plain HTML;
// this only clicks the links and buttons the page already shows, so every action has a visible twin.
(function () {
  "use strict";
  let flickerTimer = null;

  function click(selector) {
    const el = document.querySelector(selector);
    if (el) { el.click(); return true; }
    return false;
  }

  function stopFlicker() {
    if (flickerTimer) { clearInterval(flickerTimer); flickerTimer = null; }
    const stack = document.getElementById("stack");
    if (stack) { stack.classList.remove("flicker-b"); }
  }

  function toggleFlicker() {
    const stack = document.getElementById("stack");
    if (!stack) { return; }
    if (flickerTimer) { stopFlicker(); return; }
    stack.classList.remove("difference");
    flickerTimer = setInterval(function () { stack.classList.toggle("flicker-b"); }, 500);
  }

  document.addEventListener("click", function (ev) {
    const target = ev.target;
    if (!(target instanceof Element)) { return; }
    if (target.closest("[data-flicker]")) { toggleFlicker(); }
    else if (target.closest("[data-difference]")) {
      stopFlicker();
      const stack = document.getElementById("stack");
      if (stack) { stack.classList.toggle("difference"); }
    } else if (target.closest("#zoom img")) {
      const zoom = document.getElementById("zoom");
      zoom.classList.toggle("fit");
      zoom.classList.toggle("full");
    }
  });

  document.addEventListener("htmx:beforeSwap", stopFlicker);

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    const t = ev.target;
    if (t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName))) { return; }
    const key = ev.key;
    let handled = true;
    if (key === "j" || key === "ArrowRight") { handled = click("#next"); }
    else if (key === "k" || key === "ArrowLeft") { handled = click("#prev"); }
    else if (/^[1-9]$/.test(key)) { handled = click('[data-keep="' + key + '"]'); }
    else if (key === "x") { handled = click("#not-duplicates"); }
    else if (key === "d") { handled = click("#done"); }
    else if (key === "c") { handled = click("#compare"); }
    else if (key === "u") { handled = click("#up"); }
    else if (key === "f") { toggleFlicker(); }
    else if (key === "?") {
      const help = document.getElementById("shortcuts");
      if (help) { help.hidden = !help.hidden; }
    } else { handled = false; }
    if (handled) { ev.preventDefault(); }
  });
})();
