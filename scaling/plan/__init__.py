"""The plan layer: a fitted law extrapolated to a training plan and its bill.

    training.py   Law, FlopModel, the compute-optimal split, make_plan and compare_plans
    inference.py  serving in the bill (Sardana et al. 2023)
    request.py    what a plan is asked for (PlanRequest)
    record.py     a plan request to the plan record `scaling plan` prints and writes
    text.py       a plan record as text
"""
