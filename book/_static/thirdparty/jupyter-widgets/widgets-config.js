/* resnet-edu: settings for the widget manager (embed-amd.js, loaded next). Loaded after
   require.js and before embed-amd.js.

   1. Where the bundle finds its files. Each AMD module in the bundle computes the URL of its icon
      fonts from its own module URL ("@jupyter-widgets/controls",
      "@jupyter-widgets/html-manager/dist/libembed-amd", ...), by default relative to the page,
      which would 404. Map those module paths, and the bundle's assets path, to this folder, so
      everything is served from the book itself.
   2. MathJax 3. The widgets typeset their labels with the MathJax 2 call
      MathJax.Hub.Queue(["Typeset", MathJax.Hub, node]); the book loads MathJax 3, which has no
      Hub, so on pages with math that call throws "Cannot read properties of undefined (reading
      'Queue')". Before the widgets render (on "load"), give MathJax 3 a small Hub.Queue that
      typesets the node with MathJax 3's own API. */
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (here) {
    var folder = here.replace(/[?#].*$/, "").replace(/[^\/]*$/, "");
    window.__jupyter_widgets_assets_path__ = folder;
    if (window.require && window.require.config) {
      var dir = folder.replace(/\/$/, "");
      window.require.config({ paths: { "@jupyter-widgets": dir, "@jupyter-widgets/html-manager/dist": dir } });
    }
  }

  function mathjax2Shim() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.startup) { return; }  // no MathJax, or MathJax 2 (has Hub)
    mj.Hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (job && job[0] === "Typeset" && job[2]) {
            (function (node) {
              mj.startup.promise.then(function () {
                return mj.typesetPromise ? mj.typesetPromise([node]) : null;
              }).catch(function (err) { console.warn("MathJax typeset of a widget failed:", err); });
            })(job[2]);
          }
        }
      }
    };
  }
  // registered before embed-amd.js registers its own "load" handler, so it runs first
  window.addEventListener("load", mathjax2Shim);
  document.addEventListener("DOMContentLoaded", mathjax2Shim);
})();
