"""The service layer: the one place that combines the store, the engine and the executors.

The REST API, the Panel app, the notebook helpers and the CLI all call ``Workbench``; none of
them touch the store or the engine directly.
"""

from .bus import EventBus
from .errors import Conflict, InvalidInput, NotFound, QueueFull, SubmitError
from .workbench import Workbench

__all__ = ["Conflict", "EventBus", "InvalidInput", "NotFound", "QueueFull", "SubmitError",
           "Workbench"]
