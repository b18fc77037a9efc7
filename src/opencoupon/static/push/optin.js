// Push opt-in: registers the service worker and tells the server which pages this browser follows.
//
// A browser has one push subscription for this site (one service worker registration), shared by
// every page it turned notifications on for. So the page asks the server whether *this* page's
// target holds the subscription (POST /push/subscriptions/status) rather than deciding from the
// subscription alone; "Turn off" removes this page's target only, and ends the browser's
// subscription only when no other target uses it. The endpoint last sent to the server is kept in
// localStorage: a subscription the browser renewed meanwhile (a new endpoint) is sent with it, and
// the server moves every target of the old endpoint to the new one (POST /push/subscriptions/renew).
// The stored endpoint changes only once the server has the new one: after a renew that failed for
// a while (429 from the per-address limit, 5xx, no network) the next page load sends it again.
(function () {
  "use strict";
  var box = document.querySelector(".push-optin");
  if (!box || !("serviceWorker" in navigator) || !("PushManager" in window) || !window.fetch) {
    return;
  }
  var button = box.querySelector(".push-optin__button");
  var status = box.querySelector(".push-optin__status");
  var target = { kind: box.getAttribute("data-push-kind"), code: box.getAttribute("data-push-code") };
  var SENT = "opencoupon-push-endpoint";
  var subscribed = false;

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out;
  }

  function sentEndpoint() {
    try { return window.localStorage.getItem(SENT); } catch (e) { return null; }
  }

  function remember(endpoint) {
    try {
      if (endpoint) { window.localStorage.setItem(SENT, endpoint); } else { window.localStorage.removeItem(SENT); }
    } catch (e) { /* storage refused: a renewed subscription waits for the service worker */ }
  }

  function call(path, method, body) {
    return fetch(path, {
      method: method,
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(body)
    }).then(function (resp) {
      if (!resp.ok) {
        var err = new Error("server answered " + resp.status);
        err.status = resp.status;
        throw err;
      }
      return resp.json();
    });
  }

  // Worth sending again later: no answer, too many requests, a server error. Any other refusal
  // (the new subscription is not acceptable) would be refused again.
  function temporary(err) {
    return !err.status || err.status === 408 || err.status === 429 || err.status >= 500;
  }

  // The endpoint last sent is not this one: a renew is owed.
  function renewOwed(endpoint) {
    var previous = sentEndpoint();
    return !!previous && previous !== endpoint;
  }

  function forTarget(subscription) {
    return { target: target, subscription: subscription.toJSON() };
  }

  function show(on) {
    subscribed = on;
    button.textContent = on ? "Turn off notifications" : "Turn on notifications";
    button.setAttribute("aria-pressed", on ? "true" : "false");
    box.hidden = false;
  }

  // What this page shows: whether its target holds the browser's subscription (after sending a
  // renewed subscription on, when the browser has one the server was not told about).
  function sync(existing) {
    if (!existing) { return Promise.resolve(false); }
    // Settled: the server has this endpoint (renewed, nothing to renew, or refused for good).
    var renewed = renewOwed(existing.endpoint)
      ? call("/push/subscriptions/renew", "POST", { previous: sentEndpoint(), subscription: existing.toJSON() })
        .then(function () { return true; }, function (err) { return !temporary(err); })
      : Promise.resolve(true);
    return renewed.then(function (settled) {
      return call("/push/subscriptions/status", "POST", forTarget(existing)).then(function (answer) {
        // Unsettled: the old endpoint stays, so the next page load sends the renew again.
        if (settled) { remember(existing.endpoint); }
        return !!answer.subscribed;
      });
    });
  }

  function turnOn(reg) {
    return reg.pushManager.getSubscription().then(function (current) {
      if (current) { return current; }
      return fetch("/push/vapid-public-key").then(function (r) { return r.json(); }).then(function (data) {
        return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(data.publicKey) });
      });
    }).then(function (subscription) {
      return call("/push/subscriptions", "POST", forTarget(subscription)).then(function () {
        // A renew still owed (it failed on this page load) keeps the old endpoint for the next.
        if (!renewOwed(subscription.endpoint)) { remember(subscription.endpoint); }
        show(true);
        status.textContent = "Notifications are on.";
      });
    });
  }

  function turnOff(reg) {
    return reg.pushManager.getSubscription().then(function (current) {
      if (!current) { show(false); return null; }
      return call("/push/subscriptions", "DELETE", forTarget(current)).then(function (answer) {
        // Other pages still use this browser's subscription: it stays.
        if (answer.remaining) { return null; }
        remember(null);
        return current.unsubscribe();
      }).then(function () {
        show(false);
        status.textContent = "Notifications are off.";
      });
    });
  }

  navigator.serviceWorker.register("/static/push/sw.js", { scope: "/static/push/" }).then(function (reg) {
    return reg.pushManager.getSubscription().then(sync).catch(function () { return false; }).then(function (on) {
      show(on);
      button.addEventListener("click", function () {
        button.disabled = true;
        (subscribed ? turnOff(reg) : turnOn(reg)).catch(function (err) {
          status.textContent = "Notifications could not be changed (" + err.message + ").";
        }).then(function () { button.disabled = false; });
      });
    });
  }).catch(function () { box.hidden = true; });
})();
