"""The web console at ``/console``: server-rendered pages (Jinja2, htmx, uPlot — vendored in
``static/``) over the same ``RelayService`` as the API, behind a log-in with the relay token."""
