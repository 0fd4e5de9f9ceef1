"""Report plots from train logs: eval-during-training curves against step, FLOPs and time; loss per objective; cost."""

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from metrics import report_plots


@dataclass
class FakeRun:
    """What the plots read of a run (report_runs.Run): variant, flattened config, train-log records."""

    variant: str
    seed: int
    objective: str = "v"
    log: list = field(default_factory=list)

    def __post_init__(self):
        self.config = {"diffusion.prediction": self.objective}
        flops_per_step, s_per_step = 1e10 * (2 if self.variant == "b" else 1), 0.5 + 0.1 * self.seed
        for step in range(0, 101, 10):
            self.log.append({"step": step, "loss": (10.0 if self.objective == "eps" else 0.1) * math.exp(-step / 50),
                             "wall_time": s_per_step * step, "train_flops": flops_per_step * step})
            if step and step % 50 == 0:
                self.log.append({"event": "eval", "step": step, "train_flops": flops_per_step * step,
                                 "wall_time": s_per_step * step, "split": "val",
                                 "eval": {"predict": {"psnr": 10.0 + step / 10 + self.seed,
                                                      "psnr_margin_motion": step / 10 + self.seed - 15.0}},
                                 "baselines": {"predict": {"motion": {"psnr": 25.0}, "black": {"psnr": 12.0}}}})


@pytest.fixture
def drawn(monkeypatch):
    """stem name -> [(axis title, xlabel, {line label: (x, y)})] of every figure saved."""
    out = {}
    real_save = report_plots.save

    def keep(fig, stem, **margins):
        out[stem.name] = [(ax.get_title(), ax.get_xlabel(), {line.get_label(): (np.asarray(line.get_xdata(), float),
                                                                                np.asarray(line.get_ydata(), float))
                                                             for line in ax.lines}) for ax in fig.axes]
        out[stem.name + ".suptitle"] = fig._suptitle.get_text() if fig._suptitle else ""
        return real_save(fig, stem, **margins)

    monkeypatch.setattr(report_plots, "save", keep)
    return out


def test_eval_metric_against_step_flops_and_time(tmp_path, drawn):
    runs = [FakeRun("a", s) for s in (0, 1)] + [FakeRun("b", s) for s in (0, 1)]
    plots = report_plots.training_plots(runs, ["a", "b"], tmp_path)
    titles = [p[0] for p in plots]
    assert any(t.startswith("PSNR (dB) on predict during training") for t in titles)
    assert (tmp_path / "eval_predict_psnr.png").stat().st_size > 1000 and (tmp_path / "eval_predict_psnr.pdf").exists()
    step, flops, time = drawn["eval_predict_psnr"]
    assert "step" in step[1] and "FLOPs" in flops[1] and "time" in time[1]
    np.testing.assert_allclose(step[2]["a (n=2)"][0], [50, 100])
    np.testing.assert_allclose(step[2]["a (n=2)"][1], [15.5, 20.5])  # mean over seeds 0 and 1
    np.testing.assert_allclose(flops[2]["b (n=2)"][0], [1.0, 2.0])  # 2e10 FLOPs a step, in units of 1e12
    np.testing.assert_allclose(flops[2]["a (n=2)"][0], [0.5, 1.0])
    np.testing.assert_allclose(time[2]["a (n=2)"][0], [25.0, 30.0, 50.0, 60.0])  # seeds at 0.5, 0.6 s a step
    # baselines of the same clips: horizontal lines
    assert step[2]["baseline motion: 25"][1].tolist() == [25.0, 25.0]
    assert "baseline black: 12" in step[2]
    assert "min-max over seeds" in drawn["eval_predict_psnr.suptitle"]
    margin = drawn["eval_predict_psnr_margin_motion"][0]
    assert margin[2]["motion baseline (margin 0)"][1].tolist() == [0.0, 0.0]
    assert "minus the motion baseline" in report_plots.metric_axis("psnr_margin_motion")


def test_losses_of_different_objectives_get_their_own_panels(tmp_path, drawn):
    runs = [FakeRun("eps", s, "eps") for s in (0, 1)] + [FakeRun("v", s, "v") for s in (0, 1)]
    report_plots.training_plots(runs, ["eps", "v"], tmp_path)
    for stem in ("loss_step", "loss_time"):
        panels = drawn[stem]
        assert [p[0] for p in panels] == ["objective: eps", "objective: v"]
        assert [sorted(p[2]) for p in panels] == [["eps (n=2)"], ["v (n=2)"]]  # never two objectives on one axis
    one = [FakeRun("x", 0, "v"), FakeRun("y", 0, "v")]
    report_plots.training_plots(one, ["x", "y"], tmp_path)
    assert len(drawn["loss_step"]) == 1 and sorted(drawn["loss_step"][0][2]) == ["x (n=1)", "y (n=1)"]


def test_cost_is_the_sweeps_own_flops_against_time(tmp_path, drawn):
    runs = [FakeRun("a", 0), FakeRun("b", 0)]
    plots = report_plots.training_plots(runs, ["a", "b"], tmp_path)
    assert any(t.startswith("Training compute against wall-clock time") for t, *_ in plots)
    (_, xlabel, lines), = drawn["cost"]
    assert "wall-clock" in xlabel
    x, y = lines["b (n=1)"]
    np.testing.assert_allclose(y[1:] / x[1:], 2e10 / 0.5)  # FLOPs per second of run b (step 0 at 0 s)
    no_flops = [FakeRun("a", 0)]
    for rec in no_flops[0].log:
        rec.pop("train_flops")
    drawn.clear()
    report_plots.training_plots(no_flops, ["a"], tmp_path)
    assert "cost" not in drawn and "eval_predict_psnr" in drawn  # no FLOPs logged: no cost plot, step panel stays
    assert [p[0] for p in drawn["eval_predict_psnr"]] == ["against training step", "against training time"]


def test_x0_axis_is_the_diffusion_timestep(tmp_path, drawn):
    t = np.array([50.0, 300, 500, 750, 999])
    report_plots.plot_x0({"v": [(t, np.array([30.0, 20, 15, 10, 5]))]}, {}, tmp_path / "x0", task="predict",
                         variants=["v"])
    xlabel = drawn["x0"][0][1]
    assert "diffusion timestep t" in xlabel and "noise level" in xlabel and "training" not in xlabel


def test_no_logs_no_plots(tmp_path):
    assert report_plots.training_plots([], [], tmp_path) == []
    run = FakeRun("a", 0)
    run.log = [rec for rec in run.log if "eval" not in rec]
    assert report_plots.eval_series([run], "train_flops") == {} and report_plots.eval_baselines([run]) == {}
