"""Drawing a search: SearchTree in, plotly Figure out. No model, no Gradio, no torch.

`layout` places the nodes (a tidy tree), `labels` makes model text safe for plotly's HTML,
`figures` draws the tree, its replay and an HTML export, `votes` the answer chart.
"""

from visualize.figures import replay_figure, standalone_html, tree_figure
from visualize.layout import subtree_spans, tree_layout
from visualize.votes import votes_figure

__all__ = [
    "replay_figure",
    "standalone_html",
    "subtree_spans",
    "tree_figure",
    "tree_layout",
    "votes_figure",
]
