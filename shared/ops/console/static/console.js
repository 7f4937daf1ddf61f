// modelbus console: draws each page's figures (plotly JSON embedded in the page) with plotly.js.
(function () {
  function draw() {
    document.querySelectorAll('script[type="application/json"][data-figure]').forEach(function (el) {
      var target = document.getElementById(el.dataset.figure);
      if (!target || !window.Plotly) { return; }
      try {
        var figure = JSON.parse(el.textContent);
        var config = Object.assign({ displaylogo: false, responsive: true }, figure.config || {});
        window.Plotly.newPlot(target, figure.data, figure.layout, config).then(function () {
          target.setAttribute('data-drawn', String(figure.data.length));
        });
      } catch (err) {
        target.textContent = 'This chart could not be drawn: ' + err;
        target.setAttribute('data-drawn', 'error');
      }
    });
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', draw); } else { draw(); }
})();
