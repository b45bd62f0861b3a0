// The console's live part: when the server says the data changed (Server-Sent Events on
// /live), fetch the server-rendered fragment and swap it into <main id="live">. Every 15 s
// the fragment is fetched anyway, so ages ("4 min ago") and silent PCs stay current.
// No framework, no inline handlers (the page's Content-Security-Policy forbids them).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource || !window.fetch) {
    return;
  }
  var body = document.body;
  var linkState = document.getElementById("link-state");
  var REFRESH_MS = 15000;
  var requested = 0; // the newest fetch sent; older answers are dropped
  var timer = null;

  function showLink(state) {
    if (linkState) {
      linkState.dataset.state = state;
      linkState.textContent = state;
    }
  }

  function refresh(version) {
    var ticket = ++requested;
    fetch("/fragment", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("fragment: HTTP " + response.status);
        }
        var shown = response.headers.get("X-Console-Version") || version;
        return response.text().then(function (html) {
          return { html: html, shown: shown };
        });
      })
      .then(function (answer) {
        if (ticket !== requested) {
          return;
        }
        live.innerHTML = answer.html; // server-rendered, autoescaped
        if (answer.shown !== null && answer.shown !== undefined) {
          body.dataset.version = String(answer.shown);
        }
        schedule(REFRESH_MS);
      })
      .catch(function () {
        showLink("offline");
        schedule(REFRESH_MS);
      });
  }

  function schedule(ms) {
    if (timer !== null) {
      clearTimeout(timer);
    }
    timer = setTimeout(function () {
      timer = null;
      if (document.visibilityState !== "hidden") {
        refresh(null);
      } else {
        schedule(REFRESH_MS);
      }
    }, ms);
  }

  var source = new EventSource("/live?since=" + encodeURIComponent(body.dataset.version || "0"));
  source.addEventListener("open", function () {
    showLink("live");
  });
  source.addEventListener("error", function () {
    showLink("reconnecting");
  });
  source.addEventListener("message", function (event) {
    showLink("live");
    if (event.data !== body.dataset.version) {
      refresh(event.data);
    }
  });
  schedule(REFRESH_MS);
})();
