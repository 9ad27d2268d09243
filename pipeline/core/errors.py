"""The project's error types: each carries a message a user can act on."""


class PipelineError(ValueError):
    """Bad input or state that the user can fix; the CLI and pages show the message, never a traceback."""


class WeightsUnavailableError(PipelineError):
    """Pre-trained weights were asked for but cannot be had (offline, missing file)."""


class ImageReadError(PipelineError):
    """A file or upload is not a readable image."""


class RunCancelled(KeyboardInterrupt):
    """Raised in a training process asked to stop (SIGTERM from the dashboard), handled like Ctrl-C."""
