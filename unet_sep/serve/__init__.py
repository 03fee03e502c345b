"""``unet-sep serve``: an HTTP API and a page over one loaded model (docs/serve.md);
:func:`unet_sep.serve.app.create_app` builds the app."""
