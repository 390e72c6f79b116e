// Starts Swagger UI on /docs (routes/docs.py). A file rather than an inline script, so that the page's
// Content-Security-Policy allows scripts from the service only. The options are FastAPI's defaults, without the
// standalone preset (BaseLayout needs none) and without the online validator (nothing leaves the service).
"use strict";

const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: new URL(root.dataset.openapiUrl, document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
