// Reloads the status content from the server every refresh interval, and
// counts the snapshot age up in between. Nothing here builds HTML from
// strings: the new content is parsed by DOMParser (which runs no scripts)
// from the server's own escaped page, and messages are set as text.
(function () {
  "use strict";
  var refresh = document.getElementById("refresh");
  var toggle = document.getElementById("auto-refresh");
  var note = document.getElementById("refresh-state");
  var intervalMs = parseFloat(refresh.getAttribute("data-refresh-s")) * 1000;
  var loadedAt = Date.now();
  var failingSince = null;

  function tickAge() {
    var el = document.getElementById("snapshot-age");
    if (!el) return;
    var age = parseFloat(el.getAttribute("data-age-s")) + (Date.now() - loadedAt) / 1000;
    el.textContent = age.toFixed(1) + " s";
  }

  function setNote(text, isError) {
    note.textContent = text;
    note.className = isError ? "error" : "";
  }

  function reload() {
    if (!toggle.checked) return;
    fetch(window.location.href, { cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (resp) {
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("status");
        if (!fresh) throw new Error("no status in the answer");
        var current = document.getElementById("status");
        current.replaceWith(document.importNode(fresh, true));
        loadedAt = Date.now();
        failingSince = null;
        setNote("updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (err) {
        if (failingSince === null) failingSince = new Date();
        setNote("API unreachable since " + failingSince.toLocaleTimeString() + " (" + err.message +
                "); the figures below are old", true);
      });
  }

  if (window.localStorage && localStorage.getItem("tpv-broker-auto-refresh") === "off") toggle.checked = false;
  toggle.addEventListener("change", function () {
    if (window.localStorage) localStorage.setItem("tpv-broker-auto-refresh", toggle.checked ? "on" : "off");
    if (toggle.checked) reload();
  });
  setInterval(reload, intervalMs);
  setInterval(tickAge, 1000);
})();
