"""Step functions of the loan approval example (``examples/loan_approval/workflow.yaml``).

The score is a toy, deterministic model: the same application always takes the same branch.
"""

from __future__ import annotations

from typing import Any

from conveyor import step

BASE_SCORE = 600
MAX_SCORE = 850
MIN_SCORE = 300


@step
def credit_score(applicant: dict[str, Any], amount: int) -> dict[str, Any]:
    """Score an application from income, debts, employment and the amount asked for."""
    income = max(int(applicant["annual_income"]), 1)
    debt_ratio = int(applicant["monthly_debts"]) * 12 / income
    loan_ratio = amount / income
    score = BASE_SCORE + min(int(applicant["years_employed"]), 10) * 10
    reasons: list[str] = []
    if debt_ratio < 0.2:
        score += 80
    elif debt_ratio > 0.35:
        score -= 100
        reasons.append(f"debts are {debt_ratio:.0%} of income")
    if loan_ratio > 1:
        score -= 60
        reasons.append(f"amount is {loan_ratio:.1f}x annual income")
    return {"score": max(MIN_SCORE, min(MAX_SCORE, score)), "reasons": reasons}


@step
def approve(application_id: str, amount: int, score: int) -> dict[str, Any]:
    """Book the approved loan (the automatic branch)."""
    rate = 4.9 if score >= 780 else 6.4
    return {"decision": "approved", "loan_id": f"loan-{application_id}", "amount": amount, "rate": rate}


@step
def open_review_case(application_id: str, reasons: list[str]) -> dict[str, Any]:
    """Hand the application to an underwriter (the manual review branch)."""
    return {"decision": "review", "case_id": f"case-{application_id}", "reasons": reasons}


@step
def notify_applicant(name: str, decision: str, reference: str) -> dict[str, str]:
    """Tell the applicant what happens next, whichever branch ran."""
    messages = {
        "approve": "your loan is approved",
        "review": "an underwriter will review your application within two working days",
        "decline": "we cannot offer you a loan at this time",
    }
    return {"to": name, "message": f"Dear {name}, {messages[decision]} (ref {reference})."}
