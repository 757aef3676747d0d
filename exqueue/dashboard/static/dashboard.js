// exqueue dashboard: refresh the counts on the page without reloading it.
// Polls the JSON endpoint named by <body data-poll-url> every data-poll-ms and
// writes numbers into elements marked data-total="state" or
// data-count="worker" data-key="state". Text only (textContent), never markup.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-poll-url");
  var every = parseInt(body.getAttribute("data-poll-ms"), 10) || 2000;
  var live = document.getElementById("live");
  var busy = false;

  function set(element, value) {
    var text = String(value);
    if (element.textContent !== text) {
      element.textContent = text;
      element.classList.add("changed");
      window.setTimeout(function () { element.classList.remove("changed"); }, 800);
    }
  }

  function apply(data) {
    document.querySelectorAll("[data-total]").forEach(function (element) {
      var key = element.getAttribute("data-total");
      if (key in data.totals) { set(element, data.totals[key]); }
    });
    document.querySelectorAll("[data-count]").forEach(function (element) {
      var worker = data.workers[element.getAttribute("data-count")];
      var key = element.getAttribute("data-key");
      set(element, worker ? worker[key] : 0);
    });
  }

  function poll() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        apply(data);
        if (live) { live.className = "live ok"; live.title = "counts updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function (error) {
        if (live) { live.className = "live down"; live.title = "cannot refresh: " + error.message; }
      })
      .finally(function () { busy = false; });
  }

  if (url && (document.querySelector("[data-total]") || document.querySelector("[data-count]"))) {
    window.setInterval(poll, every);
  } else if (live) {
    live.hidden = true;
  }
})();
