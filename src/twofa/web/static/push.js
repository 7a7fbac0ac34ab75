// Duo Push and Duo phone calls on the set-up and validation pages: waits for activation, sends
// a push (or has Duo call) when asked, or a push once on load with autopush, then polls twofa,
// which long-polls Duo. After a denial or a timeout it stops and waits for the person to ask
// again: it never re-sends by itself. Asking for a call while a push waits (or the other way
// round) stops following the first one.
"use strict";
(function () {
  const flow = document.getElementById("duo-flow");
  if (!flow) return;
  const csrf = flow.dataset.csrf;
  const status = document.getElementById("push-status");
  const activation = document.getElementById("activation-progress");
  const requests = {
    push: {
      button: document.getElementById("send-push"),
      device: document.getElementById("device"),
      url: "/2fa/duo/push",
      starting: "Sending a push to your phone…",
      waiting: "Push sent. Approve it in Duo Mobile. Waiting",
      again: "Send another push",
    },
    call: {
      button: document.getElementById("call-me"),
      device: document.getElementById("call-device"),
      url: "/2fa/duo/call",
      starting: "Calling your phone…",
      waiting: "Calling your phone… Answer it and press 1 to approve. Waiting",
      again: "Call me again",
    },
  };
  let waitingSince = 0;
  let ticker = null;
  let latest = 0;  // which request the page follows; an older one stops quietly

  function show(element, text, kind) {
    if (!element) return;
    element.textContent = text;
    element.className = "progress" + (kind ? " " + kind : "");
  }

  function enableAll() {
    for (const request of Object.values(requests)) {
      if (request.button) request.button.disabled = false;
    }
  }

  async function getJson(url, options) {
    const response = await fetch(url, Object.assign({ headers: { Accept: "application/json" }, credentials: "same-origin" }, options || {}));
    let body = {};
    try { body = await response.json(); } catch (error) { body = { state: "error", message: "Unexpected answer from the server." }; }
    if (response.status === 401 && body.redirect) { window.location.assign(body.redirect); }
    return body;
  }

  function startTicker(message) {
    waitingSince = Date.now();
    stopTicker();
    ticker = setInterval(function () {
      const seconds = Math.round((Date.now() - waitingSince) / 1000);
      show(status, message + " (" + seconds + " s)");
    }, 1000);
  }

  function stopTicker() { if (ticker) { clearInterval(ticker); ticker = null; } }

  function finish(request, body, kind) {
    stopTicker();
    show(status, body.message || "Something went wrong.", kind);
    enableAll();
    if (request.button) request.button.textContent = request.again;
  }

  async function follow(request, challenge, mine) {
    const device = request === requests.push && request.device ? request.device.value : "";
    const query = new URLSearchParams();
    if (device) query.set("device", device);
    const remember = document.getElementById("remember-device");
    if (remember && remember.checked) query.set("remember", "on");
    const url = "/2fa/duo/push/" + encodeURIComponent(challenge) + (query.toString() ? "?" + query.toString() : "");
    for (;;) {
      const body = await getJson(url);
      // An approval signs in even when the page has moved on to another request since.
      if (body.state === "allow") { stopTicker(); show(status, body.message || "Approved.", "good"); window.location.assign(body.redirect || "/"); return; }
      if (mine !== latest) { return; }
      if (body.state === "pending") { continue; }
      finish(request, body, "bad");
      return;
    }
  }

  async function send(request) {
    const mine = ++latest;
    enableAll();
    request.button.disabled = true;
    show(status, request.starting);
    const form = new FormData();
    form.append("device", request.device ? request.device.value : "auto");
    try {
      const body = await getJson(request.url, { method: "POST", body: form, headers: { Accept: "application/json", "X-CSRF-Token": csrf } });
      if (body.state === "allow") { window.location.assign(body.redirect || "/"); return; }
      if (mine !== latest) { return; }
      if (!body.challenge) { finish(request, body, "bad"); return; }
      startTicker(request.waiting);
      await follow(request, body.challenge, mine);
    } catch (error) {
      if (mine === latest) { finish(request, { message: "Lost contact with the server. Check your connection and try again." }, "bad"); }
    }
  }

  async function waitForActivation() {
    for (;;) {
      const body = await getJson("/2fa/duo/activation");
      if (body.status === "success") {
        show(activation, "Your phone is activated. Now send yourself a push.", "good");
        enableAll();
        return;
      }
      if (body.status === "invalid") { show(activation, "The activation code has expired. Reload this page for a new one.", "bad"); return; }
      if (body.status === "error") { show(activation, body.message, "bad"); }
      await new Promise(function (resolve) { setTimeout(resolve, 2000); });
    }
  }

  for (const request of Object.values(requests)) {
    if (request.button) request.button.addEventListener("click", function () { send(request); });
  }
  if (flow.dataset.activated !== "true") { waitForActivation(); }
  if (flow.dataset.mode === "validate" && flow.dataset.autopush === "true" && requests.push.button) { send(requests.push); }
})();
