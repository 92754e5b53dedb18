"""Training curves: a person reads the y axis right (it starts at 0, first/last values written) and logs name the plot."""

from __future__ import annotations

import json
import logging

from llmtuner.extras.plotting import curve_figure, plot_loss


def test_a_nearly_flat_loss_is_drawn_flat_from_zero_with_its_first_and_last_values():
    figure = curve_figure("loss", [5, 10, 15, 20], [11.91, 11.88, 11.85, 11.82], "sft")
    axes = figure.axes[0]
    bottom, top = axes.get_ylim()
    assert bottom == 0.0 and top >= 11.91  # not a 0.1-wide zoom that makes noise look like learning
    assert axes.get_title() == "loss of sft: 11.91 at step 5 -> 11.82 at step 20"
    assert {text.get_text() for text in axes.texts} == {"11.91", "11.82"}


def test_plots_are_written_and_logged_under_their_own_name(tmp_path, llmtuner_logs):
    history = [{"step": 1, "eval_accuracy": 0.5}, {"step": 2, "eval_accuracy": 0.75}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}), encoding="utf-8")
    with llmtuner_logs.at_level(logging.INFO, logger="llmtuner"):
        written = plot_loss(str(tmp_path), keys=("eval_accuracy", "eval_macro_f1"))
    assert written == [tmp_path / "training_eval_accuracy.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Plot of eval_accuracy saved to" in llmtuner_logs.text and "Loss plot" not in llmtuner_logs.text
