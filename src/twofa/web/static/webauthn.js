// Security keys and passkeys on the set-up and verification pages: hands the server's options
// (base64url JSON from py_webauthn, in the form's data-options) to navigator.credentials.create
// or .get, then posts what the browser returns, as base64url JSON in the shape py_webauthn
// reads, with the form (csrf_token, challenge, credential). A separate file because the
// Content-Security-Policy forbids inline scripts. The button stays disabled without JavaScript.
"use strict";
(function () {
  const form = document.getElementById("webauthn-flow");
  if (!form) return;
  const button = document.getElementById("webauthn-start");
  const status = document.getElementById("webauthn-status");
  const field = form.elements.namedItem("credential");
  const creating = form.dataset.ceremony === "create";
  const DEFAULT_TIMEOUT_MS = 120000;

  function say(text, kind) {
    status.textContent = text;
    status.className = "progress" + (kind ? " " + kind : "");
  }

  function toBuffer(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 1) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return list.map((item) => Object.assign({}, item, { id: toBuffer(item.id) }));
  }

  // The JSON options with their byte fields as the browser wants them (ArrayBuffers).
  function publicKeyOptions(options) {
    const publicKey = Object.assign({}, options, { challenge: toBuffer(options.challenge) });
    if (options.user) publicKey.user = Object.assign({}, options.user, { id: toBuffer(options.user.id) });
    if (options.excludeCredentials) publicKey.excludeCredentials = descriptors(options.excludeCredentials);
    if (options.allowCredentials) publicKey.allowCredentials = descriptors(options.allowCredentials);
    return publicKey;
  }

  function credentialJson(credential) {
    const answer = credential.response;
    const response = { clientDataJSON: toBase64url(answer.clientDataJSON) };
    if (creating) {
      response.attestationObject = toBase64url(answer.attestationObject);
      if (typeof answer.getTransports === "function") response.transports = answer.getTransports();
    } else {
      response.authenticatorData = toBase64url(answer.authenticatorData);
      response.signature = toBase64url(answer.signature);
      response.userHandle = answer.userHandle ? toBase64url(answer.userHandle) : null;
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
    });
  }

  function explain(error, timedOut) {
    if (timedOut) return "Timed out — try again.";
    const name = error && error.name;
    if (name === "NotAllowedError") {
      return "The browser refused: the request was cancelled, timed out or not allowed. Try again.";
    }
    if (name === "InvalidStateError") return "This security key or passkey is already registered. Use another key.";
    if (name === "SecurityError") {
      return "The browser refused: security keys cannot be used at this address (" + window.location.host + "). Tell your administrator.";
    }
    if (name === "NotSupportedError") return "The browser refused: this key cannot do what is asked. Try another key.";
    return "The browser refused: " + (error && error.message ? error.message : String(error));
  }

  async function ask(options, signal) {
    const request = { publicKey: publicKeyOptions(options), signal: signal };
    return creating ? navigator.credentials.create(request) : navigator.credentials.get(request);
  }

  let busy = false;
  form.addEventListener("submit", async function (event) {
    event.preventDefault(); // posted below with form.submit(), once the key has answered
    if (busy) return;
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say("This browser cannot use security keys. Try another browser, or another method.", "bad");
      return;
    }
    busy = true;
    button.disabled = true;
    field.value = "";
    say(creating ? "Touch your security key now, or confirm on your device…" : "Waiting for your security key: touch it now…");
    const options = JSON.parse(form.dataset.options);
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(function () {
      timedOut = true;
      controller.abort();
    }, options.timeout || DEFAULT_TIMEOUT_MS);
    try {
      const credential = await ask(options, controller.signal);
      if (!credential) throw new Error("no key answered");
      field.value = credentialJson(credential);
      say("Checking your key…", "good");
      form.submit();
    } catch (error) {
      say(explain(error, timedOut), "bad");
      button.textContent = "Try again";
      button.disabled = false;
      busy = false;
    } finally {
      clearTimeout(timer);
    }
  });

  button.disabled = false;
})();
