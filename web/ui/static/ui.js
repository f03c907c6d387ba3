// Switchyard's operator UI: the overview and the Busy page follow job events; "select all" on dead letters.
(function () {
  "use strict";
  // The overview and the Busy page follow the job event stream (`GET /api/events`, the
  // same credentials): a job's change schedules a refresh, at most one per QUIET_MS, and
  // nothing is fetched while nothing happens. FALLBACK_MS refreshes what no job event
  // says (a pause, a worker gone) and covers a stream that cannot connect.
  var QUIET_MS = 500;
  var FALLBACK_MS = 30000;
  var page = document.body.dataset.page;
  var pending = false;
  var again = false;  // a change came while a refresh was under way: one more after it
  var last = 0;

  function stamp(text) {
    var where = document.getElementById("refreshed");
    if (where) { where.textContent = text; }
  }

  function overview() {
    return fetch("/dashboard/overview.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) { if (!answer.ok) { throw new Error(answer.status); } return answer.json(); })
      .then(function (data) {
        var body = document.querySelector("#queues tbody");
        if (body && typeof data.rows_html === "string") { body.innerHTML = data.rows_html; }
        Object.keys(data.charts || {}).forEach(function (id) {
          var old = document.getElementById(id);
          if (old) { old.outerHTML = data.charts[id]; }
        });
        stamp("live, updated " + new Date(data.generated_at).toLocaleTimeString());
      });
  }

  function busy() {
    return fetch("/dashboard/busy", {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) { if (!answer.ok) { throw new Error(answer.status); } return answer.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("table.busy tbody");
        var body = document.querySelector("table.busy tbody");
        if (fresh && body) { body.innerHTML = fresh.innerHTML; }
      });
  }

  function refresh() {
    (page === "overview" ? overview() : busy())
      .catch(function () { stamp("not updating (retrying)"); })
      .then(function () {
        pending = false;
        last = Date.now();
        if (again) { again = false; soon(); }
      });
  }

  function soon() {
    if (pending) { again = true; return; }
    pending = true;
    setTimeout(refresh, Math.max(0, last + QUIET_MS - Date.now()));
  }

  if (page === "overview" || page === "busy") {
    if (window.EventSource) {
      var events = new EventSource("/api/events");
      events.addEventListener("job", soon);
      events.onopen = soon;  // (re)connected: catch up
      events.onerror = function () { stamp("reconnecting to the event stream"); };
    }
    setInterval(soon, FALLBACK_MS);
  }

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("tr.dead-letter input[type=checkbox]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
}());
