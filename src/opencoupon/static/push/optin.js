// Push opt-in: registers the service worker and sends the browser's subscription to the server.
(function () {
  "use strict";
  var box = document.querySelector(".push-optin");
  if (!box || !("serviceWorker" in navigator) || !("PushManager" in window) || !window.fetch) {
    return;
  }
  var button = box.querySelector(".push-optin__button");
  var status = box.querySelector(".push-optin__status");
  var target = { kind: box.getAttribute("data-push-kind"), code: box.getAttribute("data-push-code") };

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out;
  }

  function send(subscription, method) {
    return fetch("/push/subscriptions", {
      method: method,
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ target: target, subscription: subscription.toJSON() })
    }).then(function (resp) {
      if (!resp.ok) { throw new Error("server answered " + resp.status); }
    });
  }

  function show(subscribed) {
    button.textContent = subscribed ? "Turn off notifications" : "Turn on notifications";
    button.setAttribute("aria-pressed", subscribed ? "true" : "false");
  }

  navigator.serviceWorker.register("/static/push/sw.js", { scope: "/static/push/" }).then(function (reg) {
    box.hidden = false;
    return reg.pushManager.getSubscription().then(function (existing) {
      show(!!existing);
      button.addEventListener("click", function () {
        button.disabled = true;
        reg.pushManager.getSubscription().then(function (current) {
          if (current) {
            return send(current, "DELETE").then(function () { return current.unsubscribe(); }).then(function () {
              show(false);
              status.textContent = "Notifications are off.";
            });
          }
          return fetch("/push/vapid-public-key").then(function (r) { return r.json(); }).then(function (data) {
            return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(data.publicKey) });
          }).then(function (subscription) {
            return send(subscription, "POST");
          }).then(function () {
            show(true);
            status.textContent = "Notifications are on.";
          });
        }).catch(function (err) {
          status.textContent = "Notifications could not be changed (" + err.message + ").";
        }).then(function () { button.disabled = false; });
      });
    });
  }).catch(function () { box.hidden = true; });
})();
