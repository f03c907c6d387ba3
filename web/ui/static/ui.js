// Switchyard's operator UI: the overview refreshes itself; "select all" on dead letters.
(function () {
  "use strict";
  var EVERY_MS = 3000;

  function refresh() {
    fetch("/dashboard/overview.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) { if (!answer.ok) { throw new Error(answer.status); } return answer.json(); })
      .then(function (data) {
        var body = document.querySelector("#queues tbody");
        if (body && typeof data.rows_html === "string") { body.innerHTML = data.rows_html; }
        Object.keys(data.charts || {}).forEach(function (id) {
          var old = document.getElementById(id);
          if (old) { old.outerHTML = data.charts[id]; }
        });
        var stamp = document.getElementById("refreshed");
        if (stamp) { stamp.textContent = "live, updated " + new Date(data.generated_at).toLocaleTimeString(); }
      })
      .catch(function () {
        var stamp = document.getElementById("refreshed");
        if (stamp) { stamp.textContent = "not updating (retrying)"; }
      })
      .then(function () { setTimeout(refresh, EVERY_MS); });
  }

  if (document.body.dataset.page === "overview") { setTimeout(refresh, EVERY_MS); }

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("tr.dead-letter input[type=checkbox]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
}());
