"""The `dgq run` report: figures (PNG) and a Markdown page that ties them together."""
