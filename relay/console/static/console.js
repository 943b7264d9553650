/* relay console: draws the charts (uPlot) from their data-chart JSON, after every page load and
   htmx swap, and ticks a DLQ page's "select all". No inline script: the CSP forbids it. */
(function () {
  "use strict";

  function axisValues(kind) {
    return kind === "latency"
      ? function (u, splits) { return splits.map(function (v) { return v == null ? "" : v + " ms"; }); }
      : undefined;
  }

  function draw(el) {
    var spec;
    try { spec = JSON.parse(el.getAttribute("data-chart")); } catch (e) { return; }
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    var series = [{}].concat(spec.series.map(function (s) {
      return {
        label: s.label,
        stroke: s.color,
        width: 2,
        fill: spec.kind === "throughput" ? s.color + "22" : undefined,
        spanGaps: spec.kind === "latency",
        points: { show: spec.kind === "latency" },
      };
    }));
    var opts = {
      width: Math.max(el.clientWidth, 300),
      // UTC, like every time the server writes.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      height: 220,
      series: series,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, 1) * 1.1]; } } },
      axes: [{}, { values: axisValues(spec.kind), size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    el.textContent = "";
    new uPlot(opts, data, el);
    el.setAttribute("data-drawn", "1");
  }

  function drawAll(root) {
    if (typeof uPlot === "undefined") { return; }
    (root || document).querySelectorAll("[data-chart]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) {
    drawAll(event.detail && event.detail.elt ? event.detail.elt.parentNode || document : document);
  });
  window.addEventListener("resize", function () { drawAll(document); });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-select-all]")) { return; }
    var name = box.getAttribute("data-select-all");
    document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
      other.checked = box.checked;
    });
  });
})();
