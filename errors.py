"""The one exception type users see."""


class SteerError(ValueError):
    """A user-facing error. The message says what to change.

    Node code lets it reach ComfyUI unchanged, so it shows in the UI.
    """
