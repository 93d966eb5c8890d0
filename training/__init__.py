"""The batch side of audiorec: data, features, graph, models, index build, evaluation."""
