"""`ds2 serve`'s parts: the HTTP API (app), audio intake, length batching, the served model (recognizer) and
the response formats. Only recognizer runs MindSpore, on the batcher's worker thread."""
