// "Print" buttons: open the browser's print dialog; the page's print stylesheet decides what
// goes on paper. A separate file because the Content-Security-Policy forbids inline scripts.
"use strict";
(function () {
  for (const button of document.querySelectorAll("[data-print]")) {
    button.hidden = false;  // hidden without JavaScript, where it could not work
    button.addEventListener("click", () => window.print());
  }
})();
