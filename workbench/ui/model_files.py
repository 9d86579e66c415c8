"""Download a trained parameter set as ONNX or TorchScript (``workbench.export``, the same
files ``GET /api/v1/models/{id}/export`` serves): two buttons for whichever parameter set a
view has selected."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import panel as pn


def export_file(service: Any, param_id: str, fmt: str) -> tuple[str, bytes]:
    """(file name, bytes) of ``param_id`` exported as ``fmt`` (onnx | torchscript)."""
    from ..export import FORMATS, export

    architecture, tensors = service.trained_network(param_id)
    return param_id + FORMATS[fmt][0], export(architecture, tensors, fmt)  # type: ignore[arg-type]


def export_buttons(service: Any, selected: Callable[[], str | None]) -> pn.Row:
    """"Download ONNX" / "Download TorchScript" for ``selected()``'s parameter set."""
    buttons = []
    for fmt, label in (("onnx", "ONNX"), ("torchscript", "TorchScript")):
        button = pn.widgets.FileDownload(label=f"Download {label}", filename=f"model.{fmt}",
                                         embed=False, button_type="default", width=190,
                                         css_classes=[f"export-{fmt}"])

        def make(fmt: str = fmt, button: Any = button) -> io.BytesIO | None:
            param_id = selected()
            if not param_id:
                return None
            name, data = export_file(service, param_id, fmt)
            button.filename = name
            return io.BytesIO(data)

        button.callback = make
        buttons.append(button)
    return pn.Row(*buttons, margin=(4, 0))
