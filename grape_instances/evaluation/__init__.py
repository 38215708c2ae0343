"""Evaluators shared by every grape model (semantic metrics, bunch counting, instance F1,
false positives by kind)."""

from .count import CountEvaluator
from .fp_kinds import FalsePositiveKindsEvaluator
from .instance import InstanceF1Evaluator
from .semantic import MergedInstancesEvaluator, SemanticEvaluator, instances_to_semantic

__all__ = ["CountEvaluator", "FalsePositiveKindsEvaluator", "InstanceF1Evaluator",
           "MergedInstancesEvaluator", "SemanticEvaluator", "instances_to_semantic"]
