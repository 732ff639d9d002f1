"""`NNHandler`'s plots and text summary."""

from __future__ import annotations

from matplotlib.figure import Figure

from nnh.stateful._plotting import history_figure, save_figure


class ReportingMixin:
    """`plot_losses`, `plot_metrics` and `print`, over the handler's history."""

    def plot_losses(self, log_y_scale: bool = False, save_path: str | None = None) -> Figure:
        """Training and validation loss per epoch; saved as PNG when `save_path` is given.
        Returns the matplotlib Figure."""
        fig = history_figure("Loss", "loss", {"train": self.train_losses, "validation": self.val_losses}, log_y_scale)
        if save_path is not None:
            save_figure(fig, save_path)
        return fig

    def plot_metrics(self, log_y_scale: bool = False, save_path_prefix: str | None = None) -> dict[str, Figure]:
        """One figure per metric (train and validation); with `save_path_prefix`, saved as
        `{prefix}_{name}.png`. Returns {name: Figure}."""
        figs = {}
        for name in self._metrics:
            series = {"train": self.train_metrics_history.get(name, []),
                      "validation": self.val_metrics_history.get(name, [])}
            figs[name] = history_figure(name, name, series, log_y_scale)
            if save_path_prefix is not None:
                save_figure(figs[name], f"{save_path_prefix}_{name}.png")
        return figs

    def print(self, show_model_structure: bool = False) -> str:
        """A summary of the handler's configuration and history."""
        lines = [
            "NNHandler",
            f"  model: {type(self.module).__name__} ({self.count_parameters()} trainable parameters)",
            f"  model_type: {self._model_type.value}   device: {self._device}   seed: {self._seed}",
            f"  optimizer: {type(self._optimizer).__name__ if self._optimizer else None}",
            f"  scheduler: {type(self._scheduler).__name__ if self._scheduler else None}",
            f"  loss_fn: {getattr(self._loss_fn, '__name__', type(self._loss_fn).__name__) if self._loss_fn else None}",
            f"  metrics: {list(self._metrics)}   callbacks: {[type(c).__name__ for c in self._callbacks]}",
            f"  epochs trained: {self._epoch}",
        ]
        if self.train_losses:
            lines.append(f"  last train loss: {self.train_losses[-1]:.6g}   last val loss: {self.val_losses[-1]:.6g}")
        if show_model_structure:
            lines.append(str(self.module))
        return "\n".join(lines)
