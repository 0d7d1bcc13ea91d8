"""The machinery that makes the lesson one folder up robust: file formats, several sources, batching, the
feature cache, checkpoints and resume state, run-directory rules, Ctrl-C, the weights download, raw-text
windows, the CLI's flags, pictures. Nothing here is needed to understand how the model learns."""
