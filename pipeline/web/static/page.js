// The job page: progress from server-sent events, chapters played as soon as they are written. No build step.
(function () {
  "use strict";
  var player = document.getElementById("player");
  var nowPlaying = document.getElementById("now-playing");
  document.addEventListener("click", function (e) {
    var button = e.target.closest ? e.target.closest("button.play") : null;
    if (!button || !player || button.disabled) return;
    player.src = button.dataset.audio;
    nowPlaying.textContent = "Playing: " + button.dataset.title;
    var played = player.play();
    if (played && played.catch) played.catch(function () {});
  });

  var section = document.getElementById("progress");
  if (!section || !section.dataset.events || !window.EventSource) return;
  var words = {
    queued: "Waiting to start", running: "Converting", done: "Done", unverified: "Done, with parts unverified",
    failed: "Failed", cancelled: "Cancelled", interrupted: "Interrupted"
  };
  function show(id, on) { var el = document.getElementById(id); if (el) el.hidden = !on; }
  function text(id, value) { var el = document.getElementById(id); if (el && el.textContent !== value) el.textContent = value; }

  function update(s) {
    var status = document.getElementById("status");
    status.dataset.status = s.status;
    text("status", words[s.status] || s.status);
    text("percent", s.percent + " %");
    var bar = document.getElementById("bar");
    bar.value = s.percent;
    bar.textContent = s.percent + " %";
    text("requests", s.requests_done + " of " + s.requests_total + " requests");
    text("rate", s.rate || "—");
    show("held", !!s.held);
    text("held-why", s.held || "");
    show("held-count", s.held_times > 0);
    text("held-times", String(s.held_times));
    show("error", !!s.error);
    text("error", s.error || "");
    show("cancel-form", s.status === "queued" || s.status === "running");
    show("resume-form", ["failed", "cancelled", "interrupted"].indexOf(s.status) >= 0);
    s.chapters.forEach(function (c) {
      var row = document.getElementById("ch-" + c.index);
      if (!row) return;
      row.querySelector(".parts").textContent = c.done + " of " + c.parts;
      row.querySelector(".retries").textContent = c.retries;
      row.querySelector(".remade").textContent = c.remade;
      row.querySelector(".errors").textContent = c.errors.join("; ");
      row.querySelector("button.play").disabled = !c.written;
    });
    var log = document.getElementById("log");
    for (var i = log.children.length; i < s.log.length; i++) {
      var li = document.createElement("li");
      li.textContent = s.log[i];
      log.appendChild(li);
    }
    if (s.downloads) {
      show("downloads", true);
      show("m4b-item", !!s.downloads.m4b);
    }
  }

  var events = new EventSource(section.dataset.events);
  events.onmessage = function (m) { update(JSON.parse(m.data)); };
  events.addEventListener("end", function () { events.close(); });
})();
