"""`Fit.plot`: the figures of a `scaling.fit.Fit`, drawn by the functions of this package.

The fit is a layer below the figures (docs/architecture.md), so it never imports them: `Fit.plot`
imports this module by name (`scaling.fit.result.PLOTS_MODULE`) when a figure is first asked
for, and this class reads the fit's record, runs and curves. Each method returns a plotly
Figure (`.show()` it, or `scaling.figures.show(fig)` for a static PNG beside it); a figure the
fit cannot draw (no approach 3, no runs read back) is a UserError saying why.
"""

from __future__ import annotations

from scaling.base.errors import UserError
from scaling.figures.laws import contours, frontier
from scaling.figures.sweep import heldout, isoflop_profiles, loss_curves, residuals
from scaling.figures.tasks import task_steps


class FitPlots:
    """The figures of one fit: frontier, isoflop, contours, residuals, loss_curves, heldout, task, all."""

    def __init__(self, fit):
        self._fit = fit

    def __repr__(self) -> str:
        return ("<figures of a scaling.fit.Fit: .frontier(plan=None), .isoflop(), .contours(), .residuals(), "
                ".loss_curves(), .heldout(), .task(), .all()>")

    def _runs(self, figure: str):
        if self._fit.table is None:
            raise UserError(f"{figure}: this fit was read without its runs; read it with "
                            "Fit.from_json(path, data=RESULTS) to draw them")
        return self._fit.table

    @staticmethod
    def _drawn(fig, why: str):
        if fig is None:
            raise UserError(why)
        return fig

    def frontier(self, plan: dict | None = None):
        """N_opt(C) and D_opt(C) of every approach with bootstrap bands, beside Chinchilla's and
        Kaplan's published laws (each named in the legend); with `plan` (`scaling plan`'s record,
        `scaling.plan.record.build`), the plan extrapolated to."""
        return frontier(self._fit.record, self._fit.table, plan)

    def isoflop(self):
        """The IsoFLOP profiles: loss against N at each budget, with Approach 2's minimum where it
        has one; the budgets whose lowest loss is at an edge of their sizes ringed."""
        return isoflop_profiles(self._fit.record, self._runs("isoflop"))

    def contours(self):
        """Approach 3's L(N, D) on the N-D plane, its efficient frontier, the budgets' IsoFLOP lines."""
        return self._drawn(contours(self._fit.record, self._fit.table),
                           "contours: this fit has no approach 3 (the law L(N, D))")

    def residuals(self):
        """Approach 3's residuals by size and by budget."""
        return self._drawn(residuals(self._fit.record, self._runs("residuals")),
                           "residuals: this fit has no approach 3 (the law L(N, D))")

    def loss_curves(self):
        """Every run's loss against FLOPs (its curve when the fit has curves) with Approach 1's envelope."""
        return loss_curves(self._runs("loss_curves"), self._fit.curves, self._fit.record)

    def heldout(self):
        """The held-out check: predicted against observed loss of the runs the refitted law did not see."""
        return self._drawn(heldout(self._fit.record, self._fit.table),
                           "heldout: this fit has no held-out check (fewer than 3 budgets, or holdout_budget=False)")

    def task(self):
        """The two-step task law (`target=` a task loss): step 1's law per size, step 2's sigmoid with its band."""
        return self._drawn(task_steps(self._fit.record),
                           "task: this fit has no task law; fit with target='task.<name>.bpb'")

    def all(self) -> list:
        """Every figure this fit can draw, in the report's order."""
        return fit_figures(self._fit.record, self._runs("all"), self._fit.curves)


def fit_figures(fit: dict, table, curves=None) -> list:
    """The figures of a fit record and its runs, in the report's order (None where the fit
    lacks the approach, left out)."""
    figs = [loss_curves(table, curves, fit), isoflop_profiles(fit, table), frontier(fit, table),
            contours(fit, table), residuals(fit, table), task_steps(fit), heldout(fit, table)]
    return [f for f in figs if f is not None]
