"""Alert rule evaluation (pure): threshold-for-duration, absence, rate of change."""

from ._engine import Alert, EntityRules, RuleState, alert_id

__all__ = ["Alert", "EntityRules", "RuleState", "alert_id"]
