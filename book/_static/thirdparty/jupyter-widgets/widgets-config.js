/* resnet-edu: where the widget manager (embed-amd.js, loaded next) finds its files.
   Loaded after require.js and before embed-amd.js. Each AMD module in the bundle computes the URL
   of its icon fonts from its own module URL ("@jupyter-widgets/controls",
   "@jupyter-widgets/html-manager/dist/libembed-amd", ...), by default relative to the page, which
   would 404. Map those module paths, and the bundle's assets path, to this folder, so everything
   is served from the book itself. */
(function () {
  var here = document.currentScript && document.currentScript.src;
  if (!here) { return; }
  var folder = here.replace(/[?#].*$/, "").replace(/[^\/]*$/, "");
  window.__jupyter_widgets_assets_path__ = folder;
  if (window.require && window.require.config) {
    var dir = folder.replace(/\/$/, "");
    window.require.config({ paths: { "@jupyter-widgets": dir, "@jupyter-widgets/html-manager/dist": dir } });
  }
})();
