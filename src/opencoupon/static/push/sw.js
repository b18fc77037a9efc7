// OpenCoupon push service worker: shows the notification and opens its page when tapped.
self.addEventListener("push", function (event) {
  var data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (e) {
    data = { body: event.data ? event.data.text() : "" };
  }
  var title = data.title || "OpenCoupon";
  event.waitUntil(self.registration.showNotification(title, {
    body: data.body || "",
    tag: data.tag || undefined,
    data: { url: data.url || "/" }
  }));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (list) {
    for (var i = 0; i < list.length; i++) {
      if (list[i].url === url && "focus" in list[i]) { return list[i].focus(); }
    }
    return self.clients.openWindow ? self.clients.openWindow(url) : undefined;
  }));
});

self.addEventListener("pushsubscriptionchange", function (event) {
  // The push service renewed (or ended) the subscription: every page that used the old one moves
  // to the new one on the server. Browsers that give no old subscription here leave it to the
  // opt-in script, which sends a renewed subscription on the next visit of any page.
  var old = event.oldSubscription;
  if (!old) { return; }
  var renewed = event.newSubscription
    ? Promise.resolve(event.newSubscription)
    : self.registration.pushManager.subscribe(old.options);
  event.waitUntil(renewed.then(function (subscription) {
    return fetch("/push/subscriptions/renew", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ previous: old.endpoint, subscription: subscription.toJSON() })
    });
  }).catch(function () { /* the opt-in script tries again on the next visit */ }));
});
