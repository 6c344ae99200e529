// Starts Swagger UI on this API's own OpenAPI document. A file of its own, not an inline script, so the
// page's Content-Security-Policy can say script-src 'self' and nothing more.
window.addEventListener("DOMContentLoaded", function () {
  "use strict";
  window.ui = SwaggerUIBundle({
    url: "openapi.json", // relative: the page may be served under a path prefix (an API Gateway stage)
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    // The default validator badge would send the document's URL to an outside service and load an image
    // from it; the CSP would refuse that anyway.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
