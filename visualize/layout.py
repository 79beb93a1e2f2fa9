"""Tidy-tree layout: where each node of a SearchTree sits in the plane.

A contour-based Reingold–Tilford layout, computed bottom-up without recursion:

- one row per step: y = -depth, root on top;
- every parent sits at the midpoint of its first and last child;
- nodes on the same row are at least `MIN_SEP` (1 unit) apart;
- compact: sibling subtrees are packed by their contours (the leftmost and rightmost x at each
  depth), so a narrow subtree tucks in under a wide neighbour instead of claiming a full-width slot.
  Packing greedily from the left leaves small subtrees hugging the left; we also pack from the right
  and average the two. The constraints "subtree j starts at least 1 unit right of subtree i at every
  shared depth" are linear, so the average of two feasible placements is feasible too and the
  result is symmetric without Walker's apportioning bookkeeping.
- DVTS: the root's children are grouped by `subtree`; each group is laid out as its own forest and
  the groups are placed side by side as solid blocks (bounding boxes, not contours) with an extra
  `subtree_gap`, so every subtree owns an x-range no other subtree touches.

Children are ordered by node id (creation order), which keeps the picture stable while a run
streams: new nodes only ever append to the right of their siblings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from strategies.tree import Node, SearchTree

MIN_SEP = 1.0  # the smallest distance between two nodes on one row
SUBTREE_GAP = 2.0  # extra space between DVTS subtree blocks, on top of MIN_SEP

Positions = dict[int, tuple[float, float]]
Contour = list[float]  # index d: extreme x at relative depth d, relative to the subtree's root


def _pack(contours: Sequence[tuple[Contour, Contour]]) -> tuple[list[float], Contour, Contour]:
    """Place sibling subtrees side by side as tightly as their contours allow.

    `contours[i]` is (left, right) of sibling i. Returns the siblings' x offsets relative to the
    midpoint of the first and last sibling, and the left/right contours of the whole row of
    siblings (index 0 = the siblings' own row) relative to that midpoint.
    """
    k = len(contours)
    # Pack from the left: each sibling as far left as the ones already placed allow.
    left_off = [0.0] * k
    acc_right: Contour = list(contours[0][1])
    for i in range(1, k):
        lc, rc = contours[i]
        common = min(len(acc_right), len(lc))
        shift = max(acc_right[d] - lc[d] for d in range(common)) + MIN_SEP
        left_off[i] = shift
        for d, r in enumerate(rc):  # sibling i is now the rightmost at each of its depths
            if d < len(acc_right):
                acc_right[d] = r + shift
            else:
                acc_right.append(r + shift)
    # Pack from the right, mirror image of the above.
    right_off = [0.0] * k
    acc_left: Contour = list(contours[-1][0])
    for i in range(k - 2, -1, -1):
        lc, rc = contours[i]
        common = min(len(acc_left), len(rc))
        shift = min(acc_left[d] - rc[d] for d in range(common)) - MIN_SEP
        right_off[i] = shift
        for d, x in enumerate(lc):
            if d < len(acc_left):
                acc_left[d] = x + shift
            else:
                acc_left.append(x + shift)
    # Average the two (aligned on the first sibling), then centre on first/last midpoint.
    offs = [(a + b - right_off[0]) / 2 for a, b in zip(left_off, right_off, strict=True)]
    mid = (offs[0] + offs[-1]) / 2
    offs = [o - mid for o in offs]
    # Contours of the row: min/max over siblings at each depth (averaging may reorder extremes).
    height = max(len(lc) for lc, _ in contours)
    row_left = [float("inf")] * height
    row_right = [float("-inf")] * height
    for off, (lc, rc) in zip(offs, contours, strict=True):
        for d, x in enumerate(lc):
            row_left[d] = min(row_left[d], x + off)
        for d, x in enumerate(rc):
            row_right[d] = max(row_right[d], x + off)
    return offs, row_left, row_right


def tree_layout(
    tree: SearchTree | Iterable[Node], *, subtree_gap: float = SUBTREE_GAP
) -> Positions:
    """Positions {node_id: (x, y)} for a tree or its nodes, with y = -depth and min(x) = 0.

    The root is the node without a parent. DVTS blocks are formed only when the root's children
    carry more than one distinct `subtree`; deeper nodes follow their depth-1 ancestor's block
    whatever their own `subtree` says. Raises ValueError if there is not exactly one root or a
    node's parent is missing (a SearchTree and its snapshots never do that).
    """
    nodes = list(tree.nodes if isinstance(tree, SearchTree) else tree)
    by_id = {n.id: n for n in nodes}
    roots = [n for n in nodes if n.parent is None]
    if len(roots) != 1:
        raise ValueError(f"a tree needs exactly one root, got {len(roots)}")
    kids: dict[int, list[int]] = {n.id: [] for n in nodes}
    for n in sorted(nodes, key=lambda n: n.id):
        if n.parent is None:
            continue
        if n.parent not in kids:
            raise ValueError(f"node {n.id} has a missing parent {n.parent}")
        kids[n.parent].append(n.id)

    # Children before parents: walk a BFS order backwards (no recursion, so deep trees are fine).
    root = roots[0].id
    order = [root]
    for nid in order:
        order.extend(kids[nid])
    rel: dict[int, float] = {}  # x of a node relative to its parent
    contour: dict[int, tuple[Contour, Contour]] = {}
    for nid in reversed(order):
        if nid == root:
            break  # the root is handled below, DVTS blocks need a different rule
        children = kids[nid]
        if not children:
            contour[nid] = ([0.0], [0.0])
            continue
        offs, row_left, row_right = _pack([contour.pop(c) for c in children])
        rel.update(zip(children, offs, strict=True))
        contour[nid] = ([0.0, *row_left], [0.0, *row_right])

    _place_root_children(kids[root], by_id, contour, rel, subtree_gap)

    # Top-down: absolute x from the relative offsets; then shift so the leftmost node is at 0.
    xs: dict[int, float] = {root: 0.0}
    for nid in order[1:]:
        xs[nid] = xs[by_id[nid].parent] + rel[nid]  # type: ignore[index]
    x0 = min(xs.values())
    return {nid: (x - x0, float(-by_id[nid].depth)) for nid, x in xs.items()}


def _place_root_children(
    children: list[int],
    by_id: dict[int, Node],
    contour: dict[int, tuple[Contour, Contour]],
    rel: dict[int, float],
    gap: float,
) -> None:
    """Fill `rel` for the root's children: one packed row, or one block per DVTS subtree."""
    if not children:
        return
    groups: dict[int, list[int]] = {}
    for c in children:
        groups.setdefault(by_id[c].subtree, []).append(c)
    if len(groups) == 1:
        offs, _, _ = _pack([contour[c] for c in children])
        rel.update(zip(children, offs, strict=True))
        return
    # Blocks in subtree order, each packed on its own, then abutted by bounding box.
    placed: dict[int, float] = {}  # child -> x in a common frame
    cursor = 0.0  # x where the next block's leftmost node may start
    for key in sorted(groups):
        members = groups[key]
        offs, row_left, row_right = _pack([contour[c] for c in members])
        shift = cursor - min(row_left)
        placed.update((c, o + shift) for c, o in zip(members, offs, strict=True))
        cursor = max(row_right) + shift + MIN_SEP + gap
    # The root centres over its first and last child, as every other parent does.
    first = min(placed.values())
    last = max(placed.values())
    mid = (first + last) / 2
    rel.update((c, x - mid) for c, x in placed.items())


def subtree_spans(
    tree: SearchTree | Iterable[Node], positions: Positions
) -> dict[int, tuple[float, float]]:
    """The x-range (min, max) of each DVTS block's nodes, root excluded; {} for a root-only tree.

    A node belongs to the block of its depth-1 ancestor, the same rule `tree_layout` uses.
    """
    nodes = sorted(tree.nodes if isinstance(tree, SearchTree) else tree, key=lambda n: n.depth)
    block: dict[int, int] = {}
    spans: dict[int, tuple[float, float]] = {}
    for n in nodes:
        if n.parent is None or n.id not in positions:
            continue
        key = block[n.id] = block.get(n.parent, n.subtree)
        x = positions[n.id][0]
        lo, hi = spans.get(key, (x, x))
        spans[key] = (min(lo, x), max(hi, x))
    return spans
